"""The "adding a field" recipe's migration step, done for real: in a copy of the project with one
column added to the tasks table (as docs/changing-the-api.md says), scripts/new_migration.py
writes the next numbered revision, which passes ruff as written and, applied, adds the column;
with nothing changed it writes nothing."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest

from impl.platform.database import connect_options
from tests.support.factories import THROUGH_PGBOUNCER

ROOT = Path(__file__).resolve().parents[2]
COLUMN = '''    estimate_minutes: int | None = Field(
        default=None, sa_column=sa.Column(sa.Integer, nullable=True)
    )
    # What `q` and `tag` search (SEARCH_TERMS).'''


def _copy_project(destination: Path) -> Path:
    for part in ("impl", "generated", "scripts", "bench"):
        shutil.copytree(ROOT / part, destination / part,
                        ignore=shutil.ignore_patterns("__pycache__", "node_modules"))
    shutil.copy(ROOT / "pyproject.toml", destination / "pyproject.toml")
    return destination


async def _run(*command: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run, command, cwd=cwd, capture_output=True, text=True, timeout=300,
        check=False,
    )


async def _new_migration(project: Path, message: str) -> subprocess.CompletedProcess[str]:
    return await _run(sys.executable, "scripts/new_migration.py", message, cwd=project)


@pytest.mark.skipif(THROUGH_PGBOUNCER, reason="no server involved: runs in the direct pass")
async def test_the_next_revision_is_numbered_written_in_house_style_and_applies(
    tmp_path: Path, fresh_database: str
) -> None:
    project = _copy_project(tmp_path / "project")
    unchanged = await _new_migration(project, "nothing")
    assert unchanged.returncode == 1 and "nothing to migrate" in unchanged.stdout, unchanged
    versions = project / "impl/migrations/versions"
    # Numbered after the highest revision there, which is the head it revises.
    head = max(int(path.name[:4]) for path in versions.glob("[0-9][0-9][0-9][0-9]_*.py"))
    last, nxt = f"{head:04d}", f"{head + 1:04d}"
    assert not list(versions.glob(f"{nxt}_*"))

    tables = project / "impl/tasks/tables.py"
    text = tables.read_text()
    assert "    # What `q` and `tag` search (SEARCH_TERMS).\n    search:" in text
    tables.write_text(text.replace("    # What `q` and `tag` search (SEARCH_TERMS).\n    search:",
                                   COLUMN + "\n    search:", 1))
    result = await _new_migration(project, "add estimate_minutes to tasks")
    assert result.returncode == 0, result.stdout + result.stderr
    (written,) = versions.glob(f"{nxt}_*.py")
    assert written.name == f"{nxt}_add_estimate_minutes_to_tasks.py"
    source = written.read_text()
    assert source.startswith(
        f'"""add estimate_minutes to tasks\n\nRevision ID: {nxt}\nRevises: {last}\n')
    assert f'revision = "{nxt}"\ndown_revision = "{last}"\n' in source
    assert "op.add_column('tasks', sa.Column('estimate_minutes'" in source
    assert "op.drop_column('tasks', 'estimate_minutes')" in source
    assert "change_xid" not in source  # xid8 is known: no spurious change of 0007's columns
    assert "create_check_constraint" in result.stdout  # the reminder
    lint = await _run(sys.executable, "-m", "ruff", "check", str(written), cwd=ROOT)
    assert lint.returncode == 0, lint.stdout

    applied = await _run(
        sys.executable, "-c",
        "import sys; from impl.platform.migrate import upgrade; upgrade(sys.argv[1])",
        fresh_database, cwd=project,
    )
    assert applied.returncode == 0, applied.stderr
    connection = await asyncpg.connect(connect_options(fresh_database).dsn)
    try:
        added = await connection.fetchval(
            "SELECT data_type FROM information_schema.columns "
            "WHERE table_name = 'tasks' AND column_name = 'estimate_minutes'")
    finally:
        await connection.close()
    assert added == "integer"
