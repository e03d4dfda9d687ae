"""The client's IP: the socket peer, or the right-most untrusted X-Forwarded-For hop behind a
trusted proxy (``MEMORA_TRUSTED_PROXIES``, addresses or networks; none trusted by default).

Rate limits count per :func:`client_address`: an IPv6 client by its /64 (one subscriber holds the
whole /64 and can rotate through it at will), an IPv4-mapped IPv6 address as the IPv4 address.

A private or loopback peer that sends ``X-Forwarded-For`` while no proxy is trusted is almost
certainly a reverse proxy nobody declared: every student would then be limited as that one
address. Such requests raise the proxy flag in Redis (``<prefix>:proxyflag``, 24 h), which
``/status`` reports (and ``check --deploy`` through :func:`proxy_flag_set`).
"""

from __future__ import annotations

import contextlib
import ipaddress
import time
from functools import lru_cache

from django.conf import settings
from django.http import HttpRequest

from core import hotstate

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

PROXY_FLAG_TTL = 24 * 3600
# A process raises the flag at most this often: the flag is a fact about the deployment, not a
# counter that needs every request.
_PROXY_FLAG_EVERY = 60.0
_flag_raised_at: dict[str, float] = {}


@lru_cache(maxsize=8)
def _trusted(proxies: tuple[str, ...]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(p.strip(), strict=False) for p in proxies if p.strip())


def _parse(address: str) -> Address | None:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _is_trusted(address: str, networks: tuple[Network, ...]) -> bool:
    ip = _parse(address)
    return ip is not None and any(ip in net for net in networks)


def proxy_flag_key() -> str:
    return f"{settings.MEMORA_REDIS_KEY_PREFIX}:proxyflag"


def _raise_proxy_flag(peer: str) -> None:
    prefix = settings.MEMORA_REDIS_KEY_PREFIX
    now = time.monotonic()
    if now - _flag_raised_at.get(prefix, -_PROXY_FLAG_EVERY) < _PROXY_FLAG_EVERY:
        return
    _flag_raised_at[prefix] = now
    with contextlib.suppress(hotstate.RedisUnavailable):
        hotstate.call(lambda r: r.set(proxy_flag_key(), peer, ex=PROXY_FLAG_TTL))


def proxy_flag_set() -> bool:
    """True when a private or loopback peer sent X-Forwarded-For in the last 24 h while no proxy is
    trusted (read from Redis; False when Redis cannot say)."""
    try:
        return bool(hotstate.call(lambda r: r.exists(proxy_flag_key())))
    except hotstate.RedisUnavailable:
        return False


def proxy_flag_peer() -> str | None:
    """The peer that last raised the flag, if it is raised."""
    try:
        value = hotstate.call(lambda r: r.get(proxy_flag_key()))
    except hotstate.RedisUnavailable:
        return None
    return value.decode() if isinstance(value, bytes) else value


def forget_proxy_flag_throttle() -> None:
    """Tests: let the next request raise the flag again."""
    _flag_raised_at.clear()


def client_ip(request: HttpRequest) -> str:
    peer = str(request.META.get("REMOTE_ADDR") or "0.0.0.0")  # noqa: S104 (an address, not a bind)
    networks = _trusted(tuple(settings.MEMORA_TRUSTED_PROXIES))
    forwarded = str(request.META.get("HTTP_X_FORWARDED_FOR") or "")
    if not networks:
        if forwarded:
            ip = _parse(peer)
            if ip is not None and (ip.is_private or ip.is_loopback):
                _raise_proxy_flag(peer)
        return peer
    if not _is_trusted(peer, networks):
        return peer
    hops = [hop.strip() for hop in forwarded.split(",") if hop.strip()]
    for hop in reversed(hops):
        if _parse(hop) is None:
            # A garbled hop was written by someone we do not trust: stop at the last trusted one.
            return peer
        if not _is_trusted(hop, networks):
            return hop
        peer = hop
    return peer


def address_key(address: str) -> str:
    """What the per-address limits count: an IPv6 address's /64, an IPv4-mapped address as IPv4.
    Always a plain address (the /64's first address), so it also fits an IP column."""
    ip = _parse(address)
    if ip is None:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((int(ip) >> 64 << 64, 64)).network_address)
    return str(ip)


def client_address(request: HttpRequest) -> str:
    """The client as the rate limits see it: :func:`client_ip`, then :func:`address_key`."""
    return address_key(client_ip(request))
