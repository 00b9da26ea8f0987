"""Which URLs the service may call: the guard against server-side request forgery.

A webhook URL is chosen by whoever holds an admin key, and the service then sends
requests from inside the network. Without a guard that is a way to reach what only the
service can reach: the cloud metadata endpoint (169.254.169.254), the database, an
internal admin page. So, unless ``LEADSCORE_WEBHOOKS_ALLOW_INTERNAL`` says otherwise:

* only ``http`` and ``https`` URLs with a host name, no user name or password in them;
  a non-ASCII path or query is percent-encoded (UTF-8) and a non-ASCII host name
  IDNA-encoded, as a browser would: :func:`normalise` is the URL stored and called;
* every address the host name resolves to must be a public (globally routable) one:
  loopback, private, link-local, carrier-grade NAT, multicast, reserved and unspecified
  addresses are refused, and so are IPv6 addresses that wrap an internal IPv4 one
  (IPv4-mapped or -compatible, NAT64, 6to4, Teredo);
* the check runs at subscription time (a clear 422) and again before every try, and the
  connection goes to the very address that was checked (no second DNS lookup that a
  rebinding name could answer differently);
* redirects are never followed (a 3xx counts as a failed try).
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import SplitResult, quote, urlsplit, urlunsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# What stays as it is when a path or query is percent-encoded: RFC 3986's unreserved and
# reserved characters, and "%" so that an already encoded URL is not encoded twice.
_PATH_SAFE = "/%:@!$&'()*+,;=-._~"
_QUERY_SAFE = _PATH_SAFE + "?"
# IPv6 ranges that embed an IPv4 address in their last 32 bits (RFC 6052, RFC 4291 2.5.5.1),
# and the local-use NAT64 prefix (RFC 8215).
_WELL_KNOWN_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")
_LOCAL_NAT64 = ipaddress.IPv6Network("64:ff9b:1::/48")


class TargetError(ValueError):
    """A URL the service will not call; the message is fit for a 422 (never quotes it)."""


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str
    port: int
    path: str  # path and query, as sent in the request line


def parse(url: str) -> Target:
    """Scheme, host, port and path of an http(s) URL, or :class:`TargetError`.

    The host and path come out ASCII (see :func:`normalise`): they go into a request line.
    """
    parts = _split(url)
    scheme = parts.scheme.lower()
    path = quote(parts.path, safe=_PATH_SAFE) or "/"
    if parts.query:
        path += "?" + quote(parts.query, safe=_QUERY_SAFE)
    default = 443 if scheme == "https" else 80
    return Target(scheme, _ascii_host(parts.hostname or ""), parts.port or default, path)


def normalise(url: str) -> str:
    """The URL as the service stores and calls it: non-ASCII percent- or IDNA-encoded.

    ``http://example.com/café?q=ü`` becomes ``http://example.com/caf%C3%A9?q=%C3%BC``
    (what a browser sends); an ASCII URL comes back as it was.
    """
    parts = _split(url)
    netloc = parts.netloc
    if not netloc.isascii():  # no user info (refused), so it is the host and a port
        host = _ascii_host(parts.hostname or "")
        netloc = host if parts.port is None else f"{host}:{parts.port}"
    return urlunsplit(
        (
            parts.scheme,
            netloc,
            quote(parts.path, safe=_PATH_SAFE),
            quote(parts.query, safe=_QUERY_SAFE),
            quote(parts.fragment, safe=_QUERY_SAFE),
        )
    )


def _split(url: str) -> SplitResult:
    """The URL's parts, or :class:`TargetError` if it is not one the service would call."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError:
        raise TargetError("not a valid URL") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise TargetError("must be an http or https URL")
    if not parts.hostname:
        raise TargetError("must name a host")
    if parts.username is not None or parts.password is not None:
        raise TargetError("must not contain a user name or password")
    if any(ch.isspace() or ord(ch) < 32 for ch in url):
        raise TargetError("must not contain spaces or control characters")
    return parts


def _ascii_host(host: str) -> str:
    if host.isascii():
        return host
    try:
        return host.encode("idna").decode("ascii")
    except UnicodeError:
        raise TargetError("the host name is not a valid domain name") from None


def is_internal(address: IPAddress) -> bool:
    """Not a globally routable unicast address, or an IPv6 one that carries an internal IPv4.

    Several IPv6 ranges deliver to an IPv4 address written inside them (IPv4-mapped and
    -compatible, NAT64, 6to4, Teredo); ``64:ff9b::7f00:1`` reaches 127.0.0.1 through a NAT64
    gateway while Python calls it global. The local-use NAT64 prefix is internal as a
    whole (RFC 8215: not globally reachable; where its IPv4 sits depends on the operator's
    prefix length).
    """
    if isinstance(address, ipaddress.IPv6Address):
        if address in _LOCAL_NAT64:
            return True
        if any(is_internal(inner) for inner in embedded_ipv4(address)):
            return True
    return not address.is_global or address.is_multicast


def embedded_ipv4(address: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address delivers to (or claims to), if any."""
    found = [address.ipv4_mapped, address.sixtofour, *(address.teredo or ())]
    if address in _WELL_KNOWN_NAT64 or address in _IPV4_COMPATIBLE:
        found.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))  # the last 32 bits
    return [inner for inner in found if inner is not None]


def resolve(target: Target, *, allow_internal: bool) -> list[IPAddress]:
    """The addresses to connect to; :class:`TargetError` if none, or any is internal.

    All of them must pass: a name that resolves to one public and one private address
    would otherwise reach the private one whenever the public one fails.
    """
    try:
        literal: IPAddress | None = ipaddress.ip_address(target.host)
    except ValueError:
        literal = None
    if literal is not None:
        addresses = [literal]
    else:
        try:
            infos = socket.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError, OSError):
            raise TargetError("the host name does not resolve") from None
        addresses = list(
            dict.fromkeys(ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos)
        )
    if not addresses:
        raise TargetError("the host name does not resolve")
    if not allow_internal and any(is_internal(a) for a in addresses):
        raise TargetError(
            "points at a loopback, private, link-local or other internal address, "
            "which this service does not call"
        )
    return addresses


def check(url: str, *, allow_internal: bool) -> Target:
    """Parse and resolve: what a subscription request must pass."""
    target = parse(url)
    resolve(target, allow_internal=allow_internal)
    return target
