"""Cisco IP phone XML: a ``CiscoIPPhoneExecute`` POSTed to ``/CGI/Execute`` that points the
phone at a ``CiscoIPPhoneText`` it then fetches from deskbot's ``[desk]`` endpoint (pure).

Cisco's IP Phone Services developer guide: a form field ``XML=`` holding
``<CiscoIPPhoneExecute><ExecuteItem Priority="0" URL="..."/>``, HTTP Basic
checked against the phone's ``authenticationURL``; the phone answers
``<CiscoIPPhoneResponse>`` (``ResponseItem Status="0"``: processed) or
``<CiscoIPPhoneError Number="N"/>`` (1 parse error, 4 authentication).
``CiscoIPPhoneText`` has ``Title`` (32 characters), ``Prompt``, ``Text``
(4,000 bytes, CR/LF between lines) and ``SoftKeyItem`` (``Name``, ``URL``,
``Position``); the phone reads ISO-8859-1, so other characters become ``?``.
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import quote

from deskbot.senders.screens.xmltext import SoftKey, escape, lines, title

NAME = "cisco-xml"
PATH = "/CGI/Execute"
SCREEN_TYPE = "text/xml; charset=ISO-8859-1"
FORM_TYPE = "application/x-www-form-urlencoded"
MAX_BYTES = 4000
MAX_TITLE = 32
MAX_KEYS = 4
ERRORS = {1: "parse error", 2: "framing error", 3: "internal file error", 4: "authentication"}


def latin1(text: str) -> str:
    """What an ISO-8859-1 screen can show: every other character replaced by ``?``."""
    return text.encode("iso-8859-1", "replace").decode("iso-8859-1")


def unshowable(text: str) -> int:
    """How many characters of `text` the phone cannot show (each shown as ``?``)."""
    return sum(1 for c in text if ord(c) > 0xFF)


def screen(text: str, name: str = "", keys: Sequence[SoftKey] = ()) -> str:
    """The ``CiscoIPPhoneText`` the phone fetches (encode it as ISO-8859-1)."""
    shown = "\r\n".join(escape(latin1(line)) for line in lines(text))
    items = "".join(
        f"<SoftKeyItem><Name>{escape(latin1(key.label))}</Name><URL>{escape(key.url)}</URL>"
        f"<Position>{n}</Position></SoftKeyItem>"
        for n, key in enumerate(keys[:MAX_KEYS], start=1)
    )
    return (
        '<?xml version="1.0" encoding="ISO-8859-1"?>\n'
        f"<CiscoIPPhoneText><Title>{escape(latin1(title(name)[:MAX_TITLE]))}</Title>"
        f"<Prompt></Prompt><Text>{shown}</Text>{items}</CiscoIPPhoneText>"
    )


def execute(url: str) -> str:
    """The form body of the POST: ``XML=`` an Execute object whose one item is `url`."""
    xml = (
        '<CiscoIPPhoneExecute><ExecuteItem Priority="0" '
        f'URL="{escape(url)}"/></CiscoIPPhoneExecute>'
    )
    return "XML=" + quote(xml, safe="")
