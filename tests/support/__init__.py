"""What the tests share, imported by them (conftest.py only declares fixtures): real servers,
PostgreSQL, PgBouncer, Better Auth, Chromium, users with tokens (factories.py)."""
