"""Sync tokens: where a device is in its user's change feed, sealed (impl/platform/sealed.py).

A position is made of PostgreSQL snapshots (`pg_snapshot` as text, `xmin:xmax:xip,...`), not
of a counter: see impl/tasks/changes.py for why and how the feed reads them.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson

from impl.platform.errors import InvalidInput
from impl.platform.sealed import Sealer


@dataclass(frozen=True, slots=True)
class SyncPosition:
    # Every change visible in this snapshot has been delivered; None: nothing yet (first sync).
    seen: str | None
    # The database's clock when `seen` was taken (None with it): a token whose `seen` is older
    # than the tombstones' retention answers 410.
    seen_at: datetime | None
    # The round in progress: the changes visible in `target` and not in `seen`, delivered in
    # (change_xid, id) order up to `after`. None when the device has caught up.
    target: str | None = None
    target_at: datetime | None = None
    after: tuple[str, uuid.UUID] | None = None

    @property
    def needs_since(self) -> datetime | None:
        """The oldest moment whose tombstones this position still needs: `seen`'s, or on a
        first sync the round's target's (the next round starts from it)."""
        return self.seen_at if self.seen is not None else self.target_at


def _invalid(field: str) -> InvalidInput:
    return InvalidInput(
        field, "Invalid sync token: pass meta.sync_token (or the last event id) back unchanged",
        "sync_token_invalid",
    )


class SyncTokenCodec:
    def __init__(self, secret: bytes) -> None:
        self._sealer = Sealer(secret, "sync token")

    def encode(self, user_id: str, position: SyncPosition) -> str:
        after = [position.after[0], str(position.after[1])] if position.after else None
        document = [position.seen, _stamp(position.seen_at), position.target,
                    _stamp(position.target_at), after]
        return self._sealer.seal(user_id, orjson.dumps(document))

    def decode(self, user_id: str, token: str, field: str = "query.since") -> SyncPosition:
        payload = self._sealer.open(user_id, token)
        if payload is None:
            raise _invalid(field)
        seen, seen_at, target, target_at, after = orjson.loads(payload)
        return SyncPosition(
            seen=seen, seen_at=_time(seen_at), target=target, target_at=_time(target_at),
            after=(after[0], uuid.UUID(after[1])) if after else None,
        )


def _stamp(moment: datetime | None) -> float | None:
    return moment.timestamp() if moment is not None else None


def _time(stamp: float | None) -> datetime | None:
    return datetime.fromtimestamp(stamp, UTC) if stamp is not None else None
