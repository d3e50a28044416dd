"""The screen a phone gets back when its OK key is pressed: "Thank you", in its maker's XML (pure).

A fetched URL must answer a valid screen of the phone's own kind (Snom shows
nothing for a fetch without an XML body). Poly's ``SoftKey:Fetch`` loads a
page in its microbrowser, so Poly gets a small XHTML page; the others get
their text screen, without keys.
"""

from __future__ import annotations

from deskbot.senders.screens import cisco, poly, snom, yealink

TEXT = "Thank you: your confirmation was received"
XML = "text/xml; charset=utf-8"


def page(format: str) -> tuple[bytes, str]:
    """The body and Content-Type answering a press from a phone of ``format``."""
    if format == snom.NAME:
        return snom.body(TEXT).encode(), XML
    if format == yealink.NAME:
        return yealink.body(TEXT).encode(), XML
    if format == cisco.NAME:
        return cisco.screen(TEXT).encode("iso-8859-1"), cisco.SCREEN_TYPE
    if format == poly.NAME:
        xhtml = (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            '<html xmlns="http://www.w3.org/1999/xhtml"><head><title>deskbot</title></head>'
            f"<body><p>{TEXT}</p></body></html>"
        )
        return xhtml.encode(), "application/xhtml+xml; charset=utf-8"
    return TEXT.encode(), "text/plain; charset=utf-8"
