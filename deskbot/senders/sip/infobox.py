"""Snom Infobox notifications: chat text -> the ``application/snomxml`` body of a NOTIFY (pure).

Snom's "Notifications via Infobox" (D7xx/D8xx, firmware 10): an out-of-dialog
NOTIFY whose body is ``<InfoBoxQueue><InfoBox><Line><Text>...``. Each line of
the chat text becomes one ``<Line>``; the phone ignores lines past what its
screen holds and wraps a long one into the next row. Chat text is character
data only: escaped, stripped of what XML 1.0 cannot carry, never markup.
"""

from __future__ import annotations

import re

CONTENT_TYPE = "application/snomxml"
# Snom's NOTIFY samples carry neither header, but a NOTIFY without them is malformed
# (RFC 6665) for most stacks; Event: xml is what Snom's XML push is reported to use.
HEADERS = (("Event", "xml"), ("Subscription-State", "active;expires=30000"))
MAX_LINES = 10  # more than any Snom screen shows; the phone drops the rest anyway

# what XML 1.0 cannot carry at all, even escaped (C0 controls but tab and line breaks,
# lone surrogates, U+FFFE and U+FFFF); a small class compiles in microseconds
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def escape(text: str) -> str:
    """Character data that can only ever be text: & < > and both quotes escaped, non-XML dropped."""
    text = _NOT_XML.sub("", text)
    return (
        text.replace("&", "&amp;")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
        .replace('"', "&quot;")
        .replace("'", "&apos;")
    )


def body(text: str) -> str:
    """The NOTIFY body showing `text`, one Infobox line per line of text."""
    text = _NOT_XML.sub("", text.replace("\r\n", "\n").replace("\r", "\n"))
    lines = [line.strip() for line in text.split("\n")]
    lines = [line for line in lines if line][:MAX_LINES] or [""]
    parts = [
        f'<Line pos="{pos}"><Text>{escape(line)}</Text></Line>'
        for pos, line in enumerate(lines, start=1)
    ]
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<InfoBoxQueue><InfoBox>{''.join(parts)}</InfoBox></InfoBoxQueue>"
    )
