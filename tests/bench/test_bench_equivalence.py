"""The benchmark's baseline (bench/baseline_app.py) answers like the API: the equivalence check
that scripts/bench.py runs before measuring, here on a small data set in every test run, so a
change of the API that the baseline does not follow fails CI rather than the next benchmark."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_baseline_answers_like_the_api() -> None:
    """Its own PostgreSQL (not the session database): the PgBouncer pass skips it."""
    run = subprocess.run(
        [sys.executable, "scripts/bench.py", "--check-only"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "same answers" in run.stdout
