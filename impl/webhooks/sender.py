"""One attempt of one delivery: sign, POST, read a bounded excerpt of the answer, say how it went.

Never raises for the endpoint's sake: whatever happens (refused address, timeout, a 500, a
redirect) becomes a Result with a reason a user can read in the deliveries listing.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import httpx

from impl.webhooks.queue import Claim
from impl.webhooks.signing import signature_header
from impl.webhooks.transport import AddressRefused, GuardedTransport

EXCERPT_CHARS = 256
READ_AT_MOST = 1024  # bytes of an answer ever read; the rest is never downloaded
USER_AGENT = "task-api-webhooks/1"


@dataclass(frozen=True, slots=True)
class Answer:
    status_code: int | None
    latency_ms: float
    error: str | None  # None when the endpoint answered 2xx
    excerpt: str | None
    refused: bool = False  # by the address policy, before any connection (transport.py)


class Sender:
    def __init__(self, *, timeout_seconds: float, allow_private: bool,
                 transport: GuardedTransport | None = None) -> None:
        self.timeout_seconds = timeout_seconds
        self.client = httpx.AsyncClient(
            transport=transport or GuardedTransport(allow_private=allow_private),
            follow_redirects=False, timeout=httpx.Timeout(timeout_seconds),
        )

    async def close(self) -> None:
        await self.client.aclose()

    async def send(self, claim: Claim) -> Answer:
        timestamp = int(time.time())
        headers = {
            "content-type": "application/json",
            "user-agent": USER_AGENT,
            "webhook-id": str(claim.id),
            "webhook-timestamp": str(timestamp),
            "webhook-signature": signature_header(
                claim.secrets, str(claim.id), timestamp, claim.body),
        }
        started = time.perf_counter()
        status_code: int | None = None
        excerpt: str | None = None

        def elapsed() -> float:
            return round((time.perf_counter() - started) * 1000, 2)

        try:
            async with asyncio.timeout(self.timeout_seconds):
                request = self.client.build_request("POST", claim.url, content=claim.body,
                                                    headers=headers)
                response = await self.client.send(request, stream=True)
                try:
                    status_code = response.status_code
                    excerpt = await _excerpt(response)
                finally:
                    await response.aclose()
        except AddressRefused as refused:
            return Answer(None, elapsed(), str(refused)[:255], None, refused=True)
        except TimeoutError:
            return Answer(status_code, elapsed(),
                          f"timed out after {self.timeout_seconds:g} s", excerpt)
        except httpx.HTTPError as error:
            reason = str(error) or type(error).__name__
            return Answer(None, elapsed(), f"{type(error).__name__}: {reason}"[:255], None)
        latency = elapsed()
        if 200 <= status_code < 300:
            return Answer(status_code, latency, None, excerpt)
        if 300 <= status_code < 400:
            return Answer(status_code, latency,
                          f"answered {status_code}: redirects are not followed", excerpt)
        return Answer(status_code, latency, f"answered {status_code}", excerpt)


async def _excerpt(response: httpx.Response) -> str | None:
    read = b""
    async for chunk in response.aiter_raw():
        read += chunk
        if len(read) >= READ_AT_MOST:
            break
    if not read:
        return None
    return read[:READ_AT_MOST].decode("utf-8", "replace")[:EXCERPT_CHARS]
