"""What every maker's screen shares (pure): chat text as XML character data, lines, soft keys.

Chat text is character data only: escaped (``&``, ``<``, ``>``, both quotes),
stripped of what XML 1.0 cannot carry, never markup. A ``SoftKey`` is a key
on the phone that makes it fetch a URL deskbot chose (a confirmation, say);
the builders take a sequence of them and show none when it is empty.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DEFAULT_TITLE = "deskbot"
MAX_TITLE_CHARS = 40  # every maker's title row is shorter; a longer one is cut
MAX_LINES = 10

# what XML 1.0 cannot carry at all, even escaped (C0 controls but tab and line breaks,
# lone surrogates, U+FFFE and U+FFFF)
NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


@dataclass(frozen=True, slots=True)
class SoftKey:
    """A key labelled ``label`` that makes the phone GET ``url`` (an http(s) URL deskbot made)."""

    label: str
    url: str


def escape(text: str) -> str:
    """Character data (or an attribute value) that can only ever be text."""
    text = NOT_XML.sub("", text)
    return (
        text.replace("&", "&amp;")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
        .replace('"', "&quot;")
        .replace("'", "&apos;")
    )


def lines(text: str, most: int = MAX_LINES) -> list[str]:
    """The text's lines, each stripped, blank ones dropped, at most ``most`` (at least one)."""
    text = NOT_XML.sub("", text.replace("\r\n", "\n").replace("\r", "\n"))
    kept = [line.strip() for line in text.split("\n")]
    return [line for line in kept if line][:most] or [""]


def title(name: str) -> str:
    """A one-line title: control characters gone, cut to MAX_TITLE_CHARS, "deskbot" if empty."""
    one = " ".join(NOT_XML.sub("", name).split())
    return one[:MAX_TITLE_CHARS] or DEFAULT_TITLE
