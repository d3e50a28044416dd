"""Poly (Polycom) VVX push: a ``PolycomIPPhone`` ``Data`` object POSTed to the phone's ``/push``.

Poly's Web Application Developer's Guide: HTTP POST to ``/push`` with HTTP
digest as ``apps.push.username`` / ``apps.push.password``; the body is
``<PolycomIPPhone><Data priority="...">XHTML</Data></PolycomIPPhone>``, at
most 1 KB on the firmware that allows least; the phone shows only the
priorities ``apps.push.messageType`` lets through (1 Normal, 5 all). A soft
key that fetches is ``<softkey index="1" label="OK" action="SoftKey:Fetch;URL"/>``.
"""

from __future__ import annotations

from collections.abc import Sequence

from deskbot.senders.screens.xmltext import SoftKey, escape, lines, title

NAME = "poly-push"
CONTENT_TYPE = "application/x-com-polycom-spipx"
PATH = "/push"
MAX_BYTES = 1024
MAX_KEYS = 4
PRIORITY = "Normal"


def body(text: str, name: str = "", keys: Sequence[SoftKey] = ()) -> str:
    """The POST body: the title as a heading, each line of `text` a paragraph."""
    shown = "".join(f"<p>{escape(line)}</p>" for line in lines(text))
    items = "".join(
        f'<softkey index="{n}" label="{escape(key.label)}" '
        f'action="SoftKey:Fetch;{escape(key.url)}"/>'
        for n, key in enumerate(keys[:MAX_KEYS], start=1)
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<PolycomIPPhone><Data priority="{PRIORITY}">'
        f"<h1>{escape(title(name))}</h1>{shown}{items}</Data></PolycomIPPhone>"
    )
