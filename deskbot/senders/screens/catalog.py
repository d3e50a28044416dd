"""Every phone format deskbot knows: its maker, transport, size limit and screen builder (pure).

The senders pick the request by a phone's ``format`` from here; the relay
asks only ``size`` and ``limit`` (through ``deskbot.senders.base``) so that a
text too long for one format is refused for the whole command.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from deskbot.senders.screens import cisco, poly, snom, yealink
from deskbot.senders.screens.xmltext import SoftKey
from deskbot.senders.sip import infobox

SIP, HTTP = "sip", "http"


def _plain(text: str, name: str = "", keys: Sequence[SoftKey] = ()) -> str:
    return text


def _infobox(text: str, name: str = "", keys: Sequence[SoftKey] = ()) -> str:
    return infobox.body(text)


@dataclass(frozen=True, slots=True)
class Spec:
    name: str
    maker: str  # for answers: "on Yealink phones"
    transport: str  # SIP or HTTP
    max_bytes: int | None  # the maker's own limit; None: the transport's only
    keys: bool  # whether a screen can carry soft keys
    build: Callable[[str, str, Sequence[SoftKey]], str]


FORMATS: dict[str, Spec] = {
    spec.name: spec
    for spec in (
        Spec("message", "", SIP, None, False, _plain),
        Spec("snom-infobox", "Snom Infobox", SIP, None, False, _infobox),
        Spec(snom.NAME, "Snom XML", SIP, None, True, snom.body),
        Spec(yealink.NAME, "Yealink", SIP, yealink.MAX_BYTES, True, yealink.body),
        Spec(poly.NAME, "Poly", HTTP, poly.MAX_BYTES, True, poly.body),
        Spec(cisco.NAME, "Cisco", HTTP, cisco.MAX_BYTES, True, cisco.screen),
    )
}
HTTP_FORMATS = frozenset(name for name, spec in FORMATS.items() if spec.transport == HTTP)


def spec(format: str) -> Spec:
    return FORMATS.get(format) or FORMATS["message"]


def size(format: str, text: str, name: str = "", keys: Sequence[SoftKey] = ()) -> int:
    """The bytes `text` takes on the wire in `format` (Cisco's screen in ISO-8859-1), with
    its soft keys (a confirm key's XML counts: a text that fits only without it is too long)."""
    built = spec(format).build(text, name, keys if spec(format).keys else ())
    return len(built.encode("iso-8859-1" if format == cisco.NAME else "utf-8"))


def limit(format: str, sip_bytes: int) -> int:
    """The largest body `format` takes: its maker's limit, and for SIP one SIP message."""
    found = spec(format)
    if found.transport == HTTP:
        return found.max_bytes or sip_bytes
    return min(found.max_bytes or sip_bytes, sip_bytes)
