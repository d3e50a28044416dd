"""Yealink XML screen: a ``YealinkIPPhoneTextScreen`` pushed by SIP NOTIFY ``Event: Yealink-xml``.

The element and its attributes (``Beep``, ``Timeout``, ``LockIn``), ``Title``,
``Text`` and ``SoftKey index`` with ``Label`` and ``URI`` follow Yealink's XML
browser guide as quoted by third-party pushers; the NOTIFY (``Event:
Yealink-xml``, ``Content-Type: application/xml``, phone setting
``push_xml.sip_notify = 1``) rests on third-party code only. Lines are kept as
line breaks inside ``Text``. At most 10,000 bytes per object.
"""

from __future__ import annotations

from collections.abc import Sequence

from deskbot.senders.screens.xmltext import SoftKey, escape, lines, title

NAME = "yealink-xml"
CONTENT_TYPE = "application/xml"
HEADERS = (("Event", "Yealink-xml"), ("Subscription-State", "active;expires=30000"))
MAX_BYTES = 10_000
MAX_KEYS = 4
TIMEOUT = 0  # seconds the screen stays; 0: until the user leaves it


def body(text: str, name: str = "", keys: Sequence[SoftKey] = ()) -> str:
    """The NOTIFY body: a titled, beeping text screen holding `text`."""
    shown = "\n".join(escape(line) for line in lines(text))
    items = "".join(
        f'<SoftKey index="{n}"><Label>{escape(key.label)}</Label>'
        f"<URI>{escape(key.url)}</URI></SoftKey>"
        for n, key in enumerate(keys[:MAX_KEYS], start=1)
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<YealinkIPPhoneTextScreen destroyOnExit="yes" Beep="yes" Timeout="{TIMEOUT}">'
        f"<Title>{escape(title(name))}</Title><Text>{shown}</Text>{items}"
        "</YealinkIPPhoneTextScreen>"
    )
