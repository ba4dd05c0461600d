"""Storage: engine and transactions, tables, migrations."""
