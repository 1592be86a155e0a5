"""Tests of impl/platform/ and the entry points: settings, CLI, logs, migrations, serving, the
database going away, PgBouncer."""
