"""Where tests leave files for people and CI to look at: artifacts/ in the direct pass,
artifacts/pgbouncer/ in the PgBouncer pass. scripts/test.sh runs the two passes at the same time,
and a test that runs in both (the /docs screenshot, the load report) must never write over, or
delete, the file the other pass is about to read back."""

from __future__ import annotations

from pathlib import Path

from tests.support.factories import THROUGH_PGBOUNCER

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "artifacts" / "pgbouncer" if THROUGH_PGBOUNCER else ROOT / "artifacts"


def artifact(name: str) -> Path:
    """The path of this pass's artifact `name`, its folder made."""
    path = ARTIFACTS / name
    path.parent.mkdir(parents=True, exist_ok=True)
    return path
