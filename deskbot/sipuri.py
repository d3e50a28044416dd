"""SIP URIs built and checked from trusted parts only.

Chat text never reaches a URI: extensions are digits, hosts come from the
directory, and anything that could smuggle a header (``?``, ``<``, CR/LF)
is refused.
"""

from __future__ import annotations

import ipaddress
import re

_HOSTNAME_RE = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,62}[A-Za-z0-9])?"
    r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,62}[A-Za-z0-9])?)*$"
)
_USER_RE = re.compile(r"^[A-Za-z0-9._~+*-]{1,64}$")
_PARAM_RE = re.compile(r"^[a-z][a-z0-9-]{0,31}(=[A-Za-z0-9._-]{1,64})?$")


def is_host(host: str) -> bool:
    if host.startswith("[") and host.endswith("]"):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            return False
        return True
    try:
        ipaddress.IPv4Address(host)
        return True
    except ValueError:
        return bool(_HOSTNAME_RE.match(host)) and not host.replace(".", "").isdigit()


def split_hostport(value: str) -> tuple[str, int | None]:
    """'host:port' (IPv6 in brackets) -> (host, port); raise ValueError with a reason."""
    if value.startswith("["):
        host, sep, rest = value.partition("]")
        host += "]"
        port_text = rest.removeprefix(":") if rest else ""
        if rest and not rest.startswith(":"):
            raise ValueError(f"{value!r} is not host:port")
    else:
        host, sep, port_text = value.rpartition(":")
        if not sep:
            host, port_text = value, ""
    if not is_host(host):
        raise ValueError(f"{value!r}: {host!r} is not a host name or IP address")
    if port_text == "":
        return host, None
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"{value!r}: port must be a number 0-65535")
    return host, int(port_text)


def is_valid(uri: str) -> bool:
    """sip:[user@]host[:port][;param...] and nothing else (no headers, no spaces)."""
    if not uri.startswith("sip:") or len(uri) > 256:
        return False
    rest = uri[4:]
    main, *params = rest.split(";")
    if not all(_PARAM_RE.match(p) for p in params):
        return False
    user, at, hostport = main.rpartition("@")
    if at and not _USER_RE.match(user):
        return False
    try:
        split_hostport(hostport)
    except ValueError:
        return False
    return True


def for_extension(extension: str, domain: str) -> str:
    """The URI of an unlisted extension at the registrar's domain."""
    if not re.fullmatch(r"[0-9]{1,15}", extension) or not is_host(domain):
        raise ValueError("extension must be digits and domain a host")
    return f"sip:{extension}@{domain}"
