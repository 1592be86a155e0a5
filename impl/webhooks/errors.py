"""The webhooks' errors: the platform's kinds (impl/platform/errors.py) with the messages a client
of the webhooks sees. The store and the URL policy raise them; the http layer maps the kinds."""

from __future__ import annotations

from impl.platform.errors import Conflict, Forbidden, InvalidInput, NotFound, QuotaExceeded


class WebhookNotFound(NotFound):
    message = "Webhook subscription not found"


class ForeignWebhook(Forbidden):
    message = "This webhook subscription belongs to another user"


class DeliveryNotFound(NotFound):
    message = "Delivery not found"


class DeliveryInFlight(Conflict):
    message = "An attempt of this delivery is in flight; ask again once it is over"


class OverWebhookQuota(QuotaExceeded):
    def __init__(self, limit: int) -> None:
        super().__init__(
            f"Webhook quota reached: at most {limit} subscriptions per user; delete one first"
        )


class EndpointRefused(InvalidInput):
    """A subscription URL the server will not call (scheme, credentials, a private address)."""

    def __init__(self, why: str) -> None:
        super().__init__("body.url", why, "url_refused")
