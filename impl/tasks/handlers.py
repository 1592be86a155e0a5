"""Handlers for the `tasks` tag, one per operation of the contract, in its order.

Each receives what it uses as arguments: the stub passes the caller, the request's parameters and
body, and `resources`, this tag's part of the app's lifespan state (the `resources` dependency).
Errors are the store's domain errors, raised through: the http layer maps them."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from generated.models import Priority, SortOrder, StatusFilter, TaskPatch, TaskWrite
from impl.http import sse
from impl.http.auth import Principal
from impl.http.envelope import dumps, success
from impl.http.state import lifespan_state
from impl.platform.hand_over import server_closing
from impl.tasks import live
from impl.tasks.changes import ChangeFeed
from impl.tasks.cursor import CursorCodec
from impl.tasks.fields import etag, instant, parse_if_match, patch_changes, write_fields
from impl.tasks.live import LiveStreams
from impl.tasks.store import ListQuery, TaskStore
from impl.tasks.sync_token import SyncPosition, SyncTokenCodec

STATE_KEY = "tasks"


@dataclass(frozen=True, slots=True)
class Resources:
    """What the task handlers use, opened once by the app's lifespan (impl/app.py)."""

    store: TaskStore
    cursors: CursorCodec
    changes: ChangeFeed
    sync_tokens: SyncTokenCodec
    live: LiveStreams


async def resources(request: Request) -> Resources:
    """The stubs' request-only dependency: this tag's part of the lifespan state."""
    found: Resources = lifespan_state(request, STATE_KEY)
    return found


def _task_response(task: dict[str, Any], status_code: int = 200, **headers: str) -> Response:
    return success(task, status_code, {"ETag": etag(task["version"]), **headers})


async def list_tasks(
    *,
    principal: Principal,
    resources: Resources,
    status: StatusFilter,
    priority: Priority | None,
    tag: str | None,
    q: str | None,
    due_before: str | None,
    due_after: str | None,
    sort: SortOrder,
    limit: int,
    cursor: str | None,
) -> Response:
    query = ListQuery(
        status=status.value,
        priority=priority.value if priority else None,
        tag=tag,
        q=q,
        due_before=instant(due_before, "query.due_before"),
        due_after=instant(due_after, "query.due_after"),
        sort=sort.value,
        limit=limit,
    )
    cursors = resources.cursors
    after = cursors.decode(principal.user_id, cursor) if cursor else None
    page = await resources.store.page(user_id=principal.user_id, query=query, after=after)
    last = page.last_position
    next_cursor = cursors.encode(principal.user_id, last) if last else None
    return success(
        page.rows, total=page.total, total_exact=page.total_exact, limit=limit,
        next_cursor=next_cursor,
    )


async def create_task(
    *, principal: Principal, body: TaskWrite, resources: Resources, idempotency_key: str | None
) -> Response:
    fields = write_fields(body)
    request_hash = None
    if idempotency_key is not None:
        canonical = orjson.dumps(fields, option=orjson.OPT_SORT_KEYS)
        request_hash = hashlib.sha256(canonical).hexdigest()
    task = await resources.store.create(
        user_id=principal.user_id,
        fields=fields,
        idempotency_key=idempotency_key,
        request_hash=request_hash,
    )
    return _task_response(task, 201, Location=f"/api/tasks/{task['id']}")


async def get_task_stats(*, principal: Principal, resources: Resources) -> Response:
    return success(await resources.store.stats(user_id=principal.user_id))


async def list_task_changes(
    *, principal: Principal, resources: Resources, since: str | None, limit: int
) -> Response:
    user_id = principal.user_id
    position = resources.sync_tokens.decode(user_id, since) if since else None
    page = await resources.changes.page(user_id=user_id, position=position, limit=limit)
    return success(
        page.contents(),
        sync_token=resources.sync_tokens.encode(user_id, page.position),
        has_more=page.has_more,
    )


async def stream_task_events(
    *, principal: Principal, resources: Resources, since: str | None, last_event_id: str | None
) -> Response:
    user_id = principal.user_id
    tokens = resources.sync_tokens
    # A reconnecting EventSource-style client sends the last event's id: it wins over `since`.
    position: SyncPosition | None = None
    if last_event_id is not None:
        position = tokens.decode(user_id, last_event_id, "header.Last-Event-ID")
    elif since is not None:
        position = tokens.decode(user_id, since)
    messages = await resources.live.open(
        user_id=user_id, position=position, closing=server_closing(),
        valid_until=principal.valid_until,
    )
    return sse.event_stream(_as_server_sent_events(messages))


async def _as_server_sent_events(messages: AsyncIterator[live.Message]) -> AsyncIterator[bytes]:
    async for message in messages:
        if isinstance(message, live.Event):
            yield sse.event(message.name, dumps(message.data), message.event_id)
        elif isinstance(message, live.Retry):
            yield sse.retry(message.milliseconds)
        else:
            yield sse.comment("heartbeat")


async def get_task(*, principal: Principal, resources: Resources, task_id: uuid.UUID) -> Response:
    return _task_response(await resources.store.get(user_id=principal.user_id, task_id=task_id))


async def replace_task(
    *,
    principal: Principal,
    body: TaskWrite,
    resources: Resources,
    task_id: uuid.UUID,
    if_match: str | None,
) -> Response:
    return await _update(resources.store, principal, task_id, write_fields(body), if_match)


async def update_task(
    *,
    principal: Principal,
    body: TaskPatch,
    resources: Resources,
    task_id: uuid.UUID,
    if_match: str | None,
) -> Response:
    return await _update(resources.store, principal, task_id, patch_changes(body), if_match)


async def delete_task(
    *, principal: Principal, resources: Resources, task_id: uuid.UUID, if_match: str | None
) -> Response:
    await resources.store.delete(
        user_id=principal.user_id, task_id=task_id, versions=parse_if_match(if_match)
    )
    return Response(status_code=204)


async def _update(
    store: TaskStore,
    principal: Principal,
    task_id: uuid.UUID,
    changes: dict[str, Any],
    if_match: str | None,
) -> Response:
    task = await store.update(
        user_id=principal.user_id,
        task_id=task_id,
        changes=changes,
        versions=parse_if_match(if_match),
    )
    return _task_response(task)
