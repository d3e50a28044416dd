"""Snom D-series XML screen: a ``SnomIPPhoneText`` pushed by SIP NOTIFY ``Event: xml`` (pure).

Snom's XML minibrowser documents ``SnomIPPhoneText`` with ``Title``, ``Text``
(``<br/>`` breaks a line) and ``SoftKeyItem`` (``Name`` F1..F4, ``Label``,
``URL``); its push page calls ``Event: xml`` and ``Content-Type:
application/snomxml`` mandatory. The phone needs ``xml_notify`` on and
deskbot's address in ``mb_trusted_hosts`` (or deskbot as its registrar).
"""

from __future__ import annotations

from collections.abc import Sequence

from deskbot.senders.screens.xmltext import SoftKey, escape, lines, title

NAME = "snom-xml"
CONTENT_TYPE = "application/snomxml"
HEADERS = (("Event", "xml"), ("Subscription-State", "active;expires=30000"))
MAX_KEYS = 4  # F1..F4 under the screen


def body(text: str, name: str = "", keys: Sequence[SoftKey] = ()) -> str:
    """The NOTIFY body: a titled screen holding `text`, each line of it a line on the phone."""
    shown = "<br/>".join(escape(line) for line in lines(text))
    items = "".join(
        f"<SoftKeyItem><Name>F{n}</Name><Label>{escape(key.label)}</Label>"
        f"<URL>{escape(key.url)}</URL></SoftKeyItem>"
        for n, key in enumerate(keys[:MAX_KEYS], start=1)
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<SnomIPPhoneText><Title>{escape(title(name))}</Title>"
        f"<Text>{shown}</Text>{items}</SnomIPPhoneText>"
    )
