"""Which endpoints the server may call: the policy against server-side request forgery.

Two checks use it. At registration (`check_url`): the scheme, credentials, and a host that is an
address or a well-known internal name. At delivery (impl/webhooks/transport.py): every address
the host's name resolves to, right before connecting to the one checked, so a name that resolves
to a public address at registration and to 127.0.0.1 later (DNS rebinding) is still refused.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from impl.webhooks.errors import EndpointRefused

# Cloud metadata services: link-local (refused as such) and a few that are not.
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a)
    for a in ("169.254.169.254", "169.254.170.2", "fd00:ec2::254", "100.100.100.200")
)
INTERNAL_NAMES = ("localhost", "metadata.google.internal", "metadata", "instance-data")
INTERNAL_SUFFIXES = (".localhost", ".internal", ".local")

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def address_problem(address: Address) -> str | None:
    """Why the server must not connect to `address`, or None when it is a public one."""
    if isinstance(address, ipaddress.IPv6Address):
        mapped = address.ipv4_mapped or address.sixtofour
        if mapped is not None:
            return address_problem(mapped)
    if address in METADATA_ADDRESSES:
        return f"{address} is a cloud metadata address"
    if address.is_loopback:
        return f"{address} is a loopback address"
    if address.is_link_local:
        return f"{address} is a link-local address"
    if address.is_multicast:
        return f"{address} is a multicast address"
    if address.is_unspecified:
        return f"{address} is the unspecified address"
    if address.is_private or not address.is_global:
        return f"{address} is a private address"
    return None


def check_url(url: str, *, allow_http: bool, allow_private: bool) -> None:
    """Raises EndpointRefused (a 422 on body.url) when the server would never call `url`."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise EndpointRefused(f"only https URLs are accepted, not {scheme or 'no scheme'}:")
    if scheme == "http" and not allow_http:
        raise EndpointRefused("only https URLs are accepted (this server does not allow http)")
    if parts.username is not None or parts.password is not None:
        raise EndpointRefused("a URL with a user name or password is not accepted")
    host = (parts.hostname or "").rstrip(".").lower()
    if not host:
        raise EndpointRefused("the URL has no host")
    if allow_private:
        return
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        if host in INTERNAL_NAMES or host.endswith(INTERNAL_SUFFIXES) or "." not in host:
            raise EndpointRefused(f"{host} is an internal name") from None
        return  # a name: its addresses are checked when it is called
    problem = address_problem(address)
    if problem is not None:
        raise EndpointRefused(f"refused: {problem}")
