"""scripts/bench.py as a module, for the scripts that reuse its servers, settings and wrk runner
(it is a file, not a module: `bench` is this package)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

NAME = "bench_main"
PATH = Path(__file__).resolve().parent.parent / "scripts" / "bench.py"


def bench_main() -> ModuleType:
    """The loaded module; loaded once per process."""
    loaded = sys.modules.get(NAME)
    if loaded is not None:
        return loaded
    spec = importlib.util.spec_from_file_location(NAME, PATH)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[NAME] = module  # before running it: its dataclasses look themselves up there
    spec.loader.exec_module(module)
    return module
