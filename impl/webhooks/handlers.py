"""Handlers for the `webhooks` tag, one per operation of the contract, in its order.

Each receives what it uses as arguments (the caller, the parameters, the body, and `resources`,
this tag's part of the app's lifespan state). Errors are domain errors, raised through."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from generated.models import WebhookCreate, WebhookEventTypes, WebhookPatch
from impl.http.auth import Principal
from impl.http.envelope import success
from impl.http.state import lifespan_state
from impl.platform.errors import InvalidInput
from impl.webhooks.addresses import check_url
from impl.webhooks.errors import EndpointRefused
from impl.webhooks.store import WebhookStore

STATE_KEY = "webhooks"
MAX_URL_CHARS = 2048  # the contract's WebhookUrl, and the table's url_length


@dataclass(frozen=True, slots=True)
class Resources:
    """What the webhook handlers use, opened once by the app's lifespan (impl/app.py)."""

    store: WebhookStore
    allow_http: bool
    allow_private: bool


async def resources(request: Request) -> Resources:
    """The stubs' request-only dependency: this tag's part of the lifespan state."""
    found: Resources = lifespan_state(request, STATE_KEY)
    return found


def _url(resources: Resources, url: object) -> str:
    text = str(url)  # normalised (a bare host gains a "/"): may pass the contract's bound
    if len(text) > MAX_URL_CHARS:
        raise EndpointRefused(f"longer than {MAX_URL_CHARS} characters once normalised")
    check_url(text, allow_http=resources.allow_http, allow_private=resources.allow_private)
    return text


def _event_types(types: WebhookEventTypes) -> list[str]:
    return list(dict.fromkeys(event_type.value for event_type in types.root))


async def list_webhooks(*, principal: Principal, resources: Resources) -> Response:
    return success(await resources.store.all(user_id=principal.user_id))


async def create_webhook(
    *, principal: Principal, body: WebhookCreate, resources: Resources
) -> Response:
    created = await resources.store.create(
        user_id=principal.user_id,
        url=_url(resources, body.url.root),
        event_types=_event_types(body.event_types),
        description=body.description.root if body.description is not None else None,
        enabled=body.enabled,
    )
    return success(created, 201, {"Location": f"/api/webhooks/{created['id']}"})


async def get_webhook(
    *, principal: Principal, resources: Resources, webhook_id: uuid.UUID
) -> Response:
    return success(await resources.store.get(user_id=principal.user_id, webhook_id=webhook_id))


async def update_webhook(
    *, principal: Principal, body: WebhookPatch, resources: Resources, webhook_id: uuid.UUID
) -> Response:
    changes: dict[str, Any] = {}
    # Only the fields sent; null only for the description (the generated model takes null for
    # every field: it cannot tell "absent" from "null").
    for name in body.model_fields_set:
        value = getattr(body, name)
        if value is None and name != "description":
            raise InvalidInput(f"body.{name}", "Field may not be null", "null_not_allowed")
        if name == "url":
            changes[name] = _url(resources, value.root)
        elif name == "event_types":
            changes[name] = _event_types(value)
        elif name == "description":
            changes[name] = value.root if value is not None else None
        else:
            changes[name] = value
    updated = await resources.store.update(
        user_id=principal.user_id, webhook_id=webhook_id, changes=changes
    )
    return success(updated)


async def delete_webhook(
    *, principal: Principal, resources: Resources, webhook_id: uuid.UUID
) -> Response:
    await resources.store.delete(user_id=principal.user_id, webhook_id=webhook_id)
    return Response(status_code=204)


async def rotate_webhook_secret(
    *, principal: Principal, resources: Resources, webhook_id: uuid.UUID
) -> Response:
    rotated = await resources.store.rotate_secret(user_id=principal.user_id, webhook_id=webhook_id)
    return success(rotated)


async def list_webhook_deliveries(
    *, principal: Principal, resources: Resources, webhook_id: uuid.UUID, limit: int
) -> Response:
    deliveries = await resources.store.deliveries(
        user_id=principal.user_id, webhook_id=webhook_id, limit=limit
    )
    return success(deliveries)


async def redeliver_webhook(
    *, principal: Principal, resources: Resources, webhook_id: uuid.UUID, delivery_id: uuid.UUID
) -> Response:
    delivery = await resources.store.redeliver(
        user_id=principal.user_id, webhook_id=webhook_id, delivery_id=delivery_id
    )
    return success(delivery, 202)
