"""An httpx transport that connects only to addresses the policy allows (addresses.py).

httpx would resolve the name itself, after any check of ours, and could get another answer
(DNS rebinding). So this transport resolves the name, checks every address it gets, and
connects to the first one, sending the name as Host and as the TLS server name (the certificate
is verified against the name). Connections are pooled per name, so a connection made for one
name (and verified for it) never carries a request for another.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
from collections import OrderedDict
from collections.abc import Awaitable, Callable

import httpx

from impl.webhooks.addresses import Address, address_problem

Resolver = Callable[[str, int], Awaitable[list[Address]]]
MAX_POOLS = 256


class AddressRefused(httpx.ConnectError):
    """The endpoint's name resolved to an address the server must not call."""


async def system_resolve(host: str, port: int) -> list[Address]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(ipaddress.ip_address(info[4][0]) for info in infos))


class GuardedTransport(httpx.AsyncBaseTransport):
    def __init__(
        self, *, allow_private: bool, resolve: Resolver = system_resolve,
        limits: httpx.Limits | None = None,
    ) -> None:
        self.allow_private = allow_private
        self.resolve = resolve
        self.limits = limits or httpx.Limits(max_connections=100, max_keepalive_connections=20)
        self._pools: OrderedDict[tuple[str, str, int], httpx.AsyncHTTPTransport] = OrderedDict()

    def _pool(self, key: tuple[str, str, int]) -> httpx.AsyncHTTPTransport:
        pool = self._pools.pop(key, None)
        if pool is None:
            pool = httpx.AsyncHTTPTransport(limits=self.limits)
            if len(self._pools) >= MAX_POOLS:
                _, oldest = self._pools.popitem(last=False)
                asyncio.get_running_loop().create_task(oldest.aclose())
        self._pools[key] = pool  # most recently used last
        return pool

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        host = url.host
        port = url.port or (443 if url.scheme == "https" else 80)
        try:
            addresses = await self.resolve(host, port)
        except OSError as error:
            raise httpx.ConnectError(f"{host} does not resolve: {error}", request=request) from None
        if not addresses:
            raise httpx.ConnectError(f"{host} does not resolve", request=request)
        if not self.allow_private:
            for address in addresses:
                problem = address_problem(address)
                if problem is not None:
                    raise AddressRefused(f"refused: {host} resolves to {problem}", request=request)
        # The Host header was set from the name when the request was built; TLS verifies the
        # certificate against sni_hostname.
        request.url = url.copy_with(host=str(addresses[0]))
        request.extensions = {**request.extensions, "sni_hostname": host}
        return await self._pool((url.scheme, host, port)).handle_async_request(request)

    async def aclose(self) -> None:
        pools, self._pools = list(self._pools.values()), OrderedDict()
        for pool in pools:
            with contextlib.suppress(Exception):
                await pool.aclose()
