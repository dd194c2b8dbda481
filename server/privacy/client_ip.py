"""The client's IP address of a request: the socket's peer, or ``X-Forwarded-For`` behind a proxy
we trust (``--trusted-proxies`` / $PULSE_TRUSTED_PROXIES: IPs and CIDRs, none by default).

A client can write anything into X-Forwarded-For, so it is read only when the peer itself is a
trusted proxy; then the address is the right-most one that is not a trusted proxy (each proxy
appends the address it saw; everything left of the first untrusted hop is the client's own claim).
Used for the per-IP rate limits and the anonymized context of privacy-compliant events; never logged.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Any, Final

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

MAX_FORWARDED_HOPS: Final = 32  # X-Forwarded-For entries read from the right; the rest is ignored


class TrustedProxies:
    """The proxies whose X-Forwarded-For is believed, parsed once at start."""

    __slots__ = ("networks",)

    def __init__(self, networks: Iterable[Network] = ()) -> None:
        self.networks: tuple[Network, ...] = tuple(networks)

    @classmethod
    def parse(cls, text: str | None) -> TrustedProxies:
        """From "10.0.0.1, 10.1.0.0/16, ::1": ValueError naming the entry that is not an IP or CIDR."""
        networks: list[Network] = []
        for entry in (text or "").split(","):
            entry = entry.strip()
            if not entry:
                continue
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                raise ValueError(f"trusted proxy {entry!r} is not an IP address or a CIDR network") from None
        return cls(networks)

    def __bool__(self) -> bool:
        return bool(self.networks)

    def trusts(self, address: str) -> bool:
        ip = _ip(address)
        return ip is not None and any(ip in network for network in self.networks)


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    text = text.strip()
    if text.startswith("[") and "]" in text:  # "[::1]:443"
        text = text[1:text.index("]")]
    elif text.count(":") == 1:  # "1.2.3.4:5678"
        text = text.split(":", 1)[0]
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def resolve(peer: str | None, forwarded_for: str | None, trusted: TrustedProxies) -> str | None:
    """The client address from the socket ``peer`` and the X-Forwarded-For header (sans-IO)."""
    if not trusted or not forwarded_for or peer is None or not trusted.trusts(peer):
        return peer
    hops = [hop.strip() for hop in forwarded_for.split(",")][-MAX_FORWARDED_HOPS:]
    for hop in reversed(hops):
        ip = _ip(hop)
        if ip is None:  # garbage in the chain: nothing left of it can be believed
            return peer
        if not any(ip in network for network in trusted.networks):
            return str(ip)
    return str(_ip(hops[0]) or peer) if hops else peer  # every hop is a proxy of ours: the first one


def client_ip(req: Any, settings: Any) -> str | None:
    """The client address of a hot request (``server.http.Request`` or the native edge's): its
    ``peer`` (the socket's remote address), or X-Forwarded-For as above (``settings.trusted_proxies``)."""
    peer: str | None = req.peer
    trusted: TrustedProxies = settings.trusted_proxies
    if not trusted:
        return peer
    return resolve(peer, req.headers.get("x-forwarded-for"), trusted)
