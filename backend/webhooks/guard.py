"""Target guard: webhook URLs must reach public internet hosts only.

A URL is checked when an endpoint is saved and again before every attempt, because DNS
answers change. ``check_url`` resolves the host once, checks every address and returns the
first one. The transport connects to that address and no other, so a second DNS lookup
cannot swap in an internal address between check and connect.

Host names and IPs listed in ``VERSUS_WEBHOOK_ALLOWED_HOSTS`` skip the address checks (local
development and tests); they are still resolved once and pinned.
"""

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from django.core.exceptions import ValidationError

from backend.webhooks import conf

# Names of cloud metadata services, rejected before any DNS lookup.
METADATA_HOSTS = frozenset({"metadata.google.internal", "metadata.goog"})
# AWS, GCP and Azure serve instance metadata on 169.254.169.254; AWS also on fd00:ec2::254.
METADATA_ADDRESSES = frozenset({
    ipaddress.ip_address("169.254.169.254"),
    ipaddress.ip_address("fd00:ec2::254"),
})


class TargetError(ValueError):
    """A webhook URL that is malformed, does not resolve, or points at a blocked address."""


@dataclass(frozen=True)
class Target:
    """A checked URL: the host as written and the one address to connect to."""

    scheme: str
    hostname: str
    port: int
    address: str


def address_block_reason(address):
    """Return why ``address`` (an ``ipaddress`` object) is blocked, or ``None`` if it is public."""
    if address.version == 6 and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address in METADATA_ADDRESSES:
        return "a cloud metadata address"
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:
        return "a link-local address"
    if address.is_multicast:
        return "a multicast address"
    if address.is_unspecified:
        return "an unspecified address"
    if address.is_private:
        return "a private address"
    if address.is_reserved:
        return "a reserved address"
    if not address.is_global:
        return "not a globally routable address"
    return None


def resolve_host(hostname, port):
    """Return the distinct addresses of ``hostname`` in resolver order.

    NOTE: ``getaddrinfo`` has no timeout of its own, so a slow resolver can hold an attempt
    past the total timeout. The claim lease leaves 60 s of margin for that.
    """
    infos = socket.getaddrinfo(hostname, port, type=socket.SOCK_STREAM)
    addresses = []
    for _family, _type, _proto, _name, sockaddr in infos:
        if sockaddr[0] not in addresses:
            addresses.append(sockaddr[0])
    return addresses


def _split_url(url):
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise TargetError(f"URL {url} is invalid: {exc}.") from exc
    if parts.scheme not in ("http", "https"):
        raise TargetError(f"URL {url} is rejected: the scheme must be http or https.")
    if not parts.hostname:
        raise TargetError(f"URL {url} is invalid: it has no host.")
    if parts.username is not None or parts.password is not None:
        raise TargetError(
            f"URL {url} is rejected: credentials in the URL are not supported; "
            "put a token in the path or query instead.",
        )
    if port is None:
        port = 443 if parts.scheme == "https" else 80
    return parts.scheme, parts.hostname.rstrip(".").lower(), port


def check_url(url):
    """Check ``url`` and return a ``Target`` pinned to one checked address.

    Raises ``TargetError`` naming the URL and the reason when the URL is malformed, the host
    does not resolve, or any of its addresses is loopback, private, link-local, multicast,
    reserved, unspecified or a cloud metadata address. No connection is opened here.
    """
    scheme, hostname, port = _split_url(url)
    allowed = hostname in conf.allowed_hosts()
    if hostname in METADATA_HOSTS and not allowed:
        raise TargetError(f"URL {url} is rejected: {hostname} is a cloud metadata host.")

    try:
        addresses = resolve_host(hostname, port)
    except (socket.gaierror, UnicodeError) as exc:
        raise TargetError(f"URL {url} is rejected: host {hostname} does not resolve ({exc}).") from exc
    if not addresses:
        raise TargetError(f"URL {url} is rejected: host {hostname} has no address.")

    if not allowed:
        for text in addresses:
            reason = address_block_reason(ipaddress.ip_address(text.split("%", 1)[0]))
            if reason is None:
                continue
            where = f"{text} is" if text == hostname else f"{hostname} resolves to {text},"
            raise TargetError(
                f"URL {url} is rejected: {where} {reason}. Use a public host, or add "
                f"{hostname} to VERSUS_WEBHOOK_ALLOWED_HOSTS for local development.",
            )
    return Target(scheme=scheme, hostname=hostname, port=port, address=addresses[0])


def validate_target_url(value):
    """Django validator form of ``check_url`` for model and serializer fields."""
    try:
        check_url(value)
    except TargetError as exc:
        raise ValidationError(str(exc), code="blocked_target") from exc
