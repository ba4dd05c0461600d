"""Every Redis key Vigil uses, built from the configured prefix. No other module names a key."""
