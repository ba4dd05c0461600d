"""Access control: API keys with roles, and which role each route needs."""
