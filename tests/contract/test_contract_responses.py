"""What redocly.yaml no longer asks Redocly to check: every operation documents a client error
(4XX), except the two probes, which take no input and no token and are never rate limited."""

from __future__ import annotations

from pathlib import Path

import yaml

CONTRACT = Path(__file__).resolve().parents[2] / "openapi.yaml"
PROBES = {("get", "/api/health"), ("get", "/api/ready")}
METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}


def test_every_operation_but_the_probes_documents_a_4xx_response() -> None:
    paths = yaml.safe_load(CONTRACT.read_text())["paths"]
    without = {
        (method, path)
        for path, item in paths.items()
        for method, operation in item.items()
        if method in METHODS and not any(str(code).startswith("4") for code in operation["responses"])
    }
    assert without == PROBES
