"""What a user id is: the token's `sub`, opaque. Better Auth's default ids are 32 random
alphanumerics; UUIDs, serial numbers and custom ids occur too, and an existing Better Auth app
cannot change its ids, so only the shape is checked: 1-255 characters, no control characters.

One rule for the token check (impl/platform/token_verifier.py), the CLI and the database's CHECK
constraint (impl/tasks/tables.py).
"""

from __future__ import annotations

import re

MAX_LENGTH = 255
# The database's CHECK: the same rule in SQL (PostgreSQL text cannot hold NUL or surrogates).
SQL_CHECK = (
    f"char_length(user_id) BETWEEN 1 AND {MAX_LENGTH} "
    r"AND user_id !~ '[\x01-\x1f\x7f-\x9f]'"
)

# Exactly the characters of Unicode categories Cc (C0, DEL and C1 controls) and Cs (lone
# surrogates, which are not text PostgreSQL can store): one regular expression instead of a
# category lookup per character.
_CONTROL_OR_SURROGATE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")

EMPTY = "empty"
NOT_TEXT = "not a string"
TOO_LONG = f"longer than {MAX_LENGTH} characters"
CONTROL = "contains control characters"


def problem(value: object) -> str | None:
    """Why `value` is not a user id (one of the phrases above), or None."""
    if value is None or value == "":
        return EMPTY
    if not isinstance(value, str):
        return NOT_TEXT
    if len(value) > MAX_LENGTH:
        return TOO_LONG
    if _CONTROL_OR_SURROGATE.search(value):
        return CONTROL
    return None
