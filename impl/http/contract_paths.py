"""Which methods the contract documents for each path: the source of every 405 and its
`Allow` header, so they follow openapi.yaml rather than whichever route Starlette tried first."""

from __future__ import annotations

import re
from functools import cache

import yaml

from impl.http.contract import contract_yaml


@cache
def _path_methods() -> list[tuple[re.Pattern[str], frozenset[str]]]:
    paths = yaml.safe_load(contract_yaml())["paths"]
    table = []
    for template, item in paths.items():
        pattern = re.sub(r"\\{[^/]+\\}", "[^/]+", re.escape(template))
        methods = {m.upper() for m in item if m in ("get", "put", "post", "delete", "patch")}
        table.append((re.compile(f"^{pattern}$"), template.count("{"), frozenset(methods)))
    # Literal paths before templated ones: /items/stats is not /items/{item_id}.
    table.sort(key=lambda row: row[1])
    return [(pattern, methods) for pattern, _, methods in table]


def documented_methods(path: str) -> frozenset[str] | None:
    """The methods the contract documents for a path, or None when the path is not in it."""
    for pattern, methods in _path_methods():
        if pattern.match(path):
            return methods
    return None
