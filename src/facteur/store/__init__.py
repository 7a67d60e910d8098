"""The Store port and its adapters (memory, SQLite, PostgreSQL)."""
