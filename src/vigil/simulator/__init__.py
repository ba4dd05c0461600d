"""The simulator: a seeded, simulated fleet that Vigil's remediations act on."""
