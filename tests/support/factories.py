"""Test data: users with real tokens (fresh random ids, so tests never see each other's tasks),
and the SQL that recounts the per-user counters from the rows."""

from __future__ import annotations

import os
from dataclasses import dataclass

from bench.data import TAG_ROWS, WORD_ROWS
from impl.platform.token_verifier import mint_hs256
from tests.support.servers import SECRET, random_user_id

# TEST_THROUGH_PGBOUNCER=1 (scripts/test.sh, second pass): the API servers reach the session
# database through PgBouncer in transaction mode, like Neon's pooled endpoint; migrations and
# the `db` fixture still connect directly.
THROUGH_PGBOUNCER = os.environ.get("TEST_THROUGH_PGBOUNCER") == "1"


@dataclass
class User:
    id: str  # opaque, as Better Auth makes them
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def new_user() -> User:
    user_id = random_user_id()
    return User(user_id, mint_hs256(SECRET, user_id))


COUNTERS = ("total", "completed", "low", "medium", "high",
            "low_completed", "medium_completed", "high_completed")
_COUNTS = ", ".join([
    "count(*) AS total", "count(*) FILTER (WHERE completed) AS completed",
    *(f"count(*) FILTER (WHERE priority = '{p}') AS {p}" for p in ("low", "medium", "high")),
    *(f"count(*) FILTER (WHERE completed AND priority = '{p}') AS {p}_completed"
      for p in ("low", "medium", "high")),
])
_DIFFERS = (
    "(" + ", ".join(f"coalesce(c.{n}, 0)" for n in COUNTERS) + ") IS DISTINCT FROM ("
    + ", ".join(f"coalesce(r.{n}, 0)" for n in COUNTERS) + ")"
)
# A user's counters are the sums of the user's rows (one per slot since migration 0010).
_SUMS = ", ".join(f"sum({n}) AS {n}" for n in COUNTERS)
# Users (and users' tags) whose counters differ from a recount of their rows.
RECOUNT = f"""
    SELECT coalesce(c.user_id, r.user_id) AS user_id
    FROM (SELECT user_id, {_SUMS} FROM task_counts GROUP BY user_id) AS c
    FULL JOIN (SELECT user_id, {_COUNTS} FROM tasks GROUP BY user_id) AS r
        ON r.user_id = c.user_id
    WHERE {_DIFFERS}
"""
# task_tags (migration 0005) against what the tasks say it holds: rows missing or extra.
_TAG_INDEX = "SELECT user_id, tag, created_at, task_id, word_bits FROM task_tags"
RELIST_TAGS = (
    f"SELECT * FROM (({TAG_ROWS} EXCEPT ALL {_TAG_INDEX}) "
    f"UNION ALL ({_TAG_INDEX} EXCEPT ALL {TAG_ROWS})) AS differences"
)
# task_words (migration 0012) against the words the tasks' `search` holds.
_WORD_INDEX = "SELECT user_id, word, task_id FROM task_words"
RELIST_WORDS = (
    f"SELECT * FROM (({WORD_ROWS} EXCEPT ALL {_WORD_INDEX}) "
    f"UNION ALL ({_WORD_INDEX} EXCEPT ALL {WORD_ROWS})) AS differences"
)
RECOUNT_TAGS = f"""
    SELECT coalesce(c.user_id, r.user_id) AS user_id, coalesce(c.tag, r.tag) AS tag
    FROM (SELECT user_id, tag, {_SUMS} FROM task_tag_counts GROUP BY user_id, tag) AS c
    FULL JOIN (
        SELECT user_id, tag, {_COUNTS}
        FROM (SELECT DISTINCT id, user_id, completed, priority, unnest(tags) AS tag FROM tasks)
            AS tagged
        GROUP BY user_id, tag
    ) AS r ON r.user_id = c.user_id AND r.tag = c.tag
    WHERE {_DIFFERS}
"""
