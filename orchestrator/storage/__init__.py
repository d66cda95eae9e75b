"""Storage: SQLModel tables, sessions, bulk I/O and Alembic migrations."""
