"""What every layer stands on: settings, the database pool, logs, token verification, the
embedded PostgreSQL, migrations, serving. Imports nothing else of impl."""
