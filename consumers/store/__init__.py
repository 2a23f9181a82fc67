"""The store: one protocol (core), SQLite and PostgreSQL, the migrations (schema) and copy."""
