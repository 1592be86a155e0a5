"""Figures on the terminal even when pytest captures output: for the tests whose point is a
measurement (load, outage, shutdown), the numbers must be seen on every run."""

from __future__ import annotations

import pytest


def show(request: pytest.FixtureRequest, text: str) -> None:
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is None or capture is None:
        print(text)
        return
    with capture.global_and_fixture_disabled():
        for line in text.splitlines():
            reporter.write_line(line)
