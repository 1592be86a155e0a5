"""Handlers for the `tasks` tag, one per operation of the contract, in its order."""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

import orjson
from starlette.responses import Response

from generated.models import Priority, SortOrder, StatusFilter, TaskPatch, TaskWrite
from impl import runtime
from impl.http.auth import Principal
from impl.http.envelope import success
from impl.http.errors import Conflict, Forbidden, NotFound, PreconditionFailed, QuotaExceeded
from impl.tasks.fields import etag, instant, parse_if_match, patch_changes, write_fields
from impl.tasks.store import Foreign, KeyReused, ListQuery, Missing, OverQuota, Stale


def _task_response(task: dict[str, Any], status_code: int = 200, **headers: str) -> Response:
    return success(task, status_code, {"ETag": etag(task["version"]), **headers})


async def list_tasks(
    *,
    principal: Principal,
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
    rt = runtime.current()
    after = rt.cursors.decode(principal.user_id, cursor) if cursor else None
    page = await rt.tasks.page(user_id=principal.user_id, query=query, after=after)
    last = page.last_position
    next_cursor = rt.cursors.encode(principal.user_id, last) if last else None
    return success(
        page.rows, total=page.total, total_exact=page.total_exact, limit=limit,
        next_cursor=next_cursor,
    )


async def create_task(
    *, principal: Principal, body: TaskWrite, idempotency_key: str | None
) -> Response:
    fields = write_fields(body)
    request_hash = None
    if idempotency_key is not None:
        canonical = orjson.dumps(fields, option=orjson.OPT_SORT_KEYS)
        request_hash = hashlib.sha256(canonical).hexdigest()
    try:
        task = await runtime.current().tasks.create(
            user_id=principal.user_id,
            fields=fields,
            idempotency_key=idempotency_key,
            request_hash=request_hash,
        )
    except KeyReused as error:
        raise Conflict(error.message) from None
    except OverQuota:
        raise QuotaExceeded(runtime.current().settings.max_tasks_per_user) from None
    return _task_response(task, 201, Location=f"/api/tasks/{task['id']}")


async def get_task_stats(*, principal: Principal) -> Response:
    return success(await runtime.current().tasks.stats(user_id=principal.user_id))


async def get_task(*, principal: Principal, task_id: uuid.UUID) -> Response:
    try:
        task = await runtime.current().tasks.get(user_id=principal.user_id, task_id=task_id)
    except Missing:
        raise NotFound() from None
    except Foreign:
        raise Forbidden() from None
    return _task_response(task)


async def replace_task(
    *, principal: Principal, body: TaskWrite, task_id: uuid.UUID, if_match: str | None
) -> Response:
    return await _update(principal, task_id, write_fields(body), if_match)


async def update_task(
    *, principal: Principal, body: TaskPatch, task_id: uuid.UUID, if_match: str | None
) -> Response:
    return await _update(principal, task_id, patch_changes(body), if_match)


async def delete_task(
    *, principal: Principal, task_id: uuid.UUID, if_match: str | None
) -> Response:
    try:
        await runtime.current().tasks.delete(
            user_id=principal.user_id, task_id=task_id, versions=parse_if_match(if_match)
        )
    except (Missing, Foreign, Stale) as error:
        raise _write_error(error) from None
    return Response(status_code=204)


async def _update(
    principal: Principal, task_id: uuid.UUID, changes: dict[str, Any], if_match: str | None
) -> Response:
    try:
        task = await runtime.current().tasks.update(
            user_id=principal.user_id,
            task_id=task_id,
            changes=changes,
            versions=parse_if_match(if_match),
        )
    except (Missing, Foreign, Stale) as error:
        raise _write_error(error) from None
    return _task_response(task)


def _write_error(error: Exception) -> Exception:
    if isinstance(error, Missing):
        return NotFound()
    if isinstance(error, Foreign):
        return Forbidden()
    return PreconditionFailed()


