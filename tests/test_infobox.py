"""The Infobox body (pure): whatever the chat text, the XML holds it as text, line by line."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from hypothesis import given
from hypothesis import strategies as st

from deskbot.senders.sip import infobox


def lines_of(body: str) -> list[str]:
    root = ET.fromstring(body.encode())
    assert [el.tag for el in root.iter()][:2] == ["InfoBoxQueue", "InfoBox"]
    assert {el.tag for el in root.iter()} <= {"InfoBoxQueue", "InfoBox", "Line", "Text"}
    return [line.findtext("Text") or "" for line in root.iter("Line")]


def test_markup_quotes_and_cdata_ends_in_chat_text_stay_characters():
    text = '</Text><Icon>x</Icon><Line pos="9"> & &amp; "a" \'b\' ]]> <!-- c -->'
    assert lines_of(infobox.body(text)) == [text]


def test_lines_are_numbered_and_blank_lines_dropped():
    body = infobox.body("first\n\n  second  \nthird")
    assert lines_of(body) == ["first", "second", "third"]
    assert '<Line pos="1">' in body and '<Line pos="3">' in body


@given(st.text())
def test_any_text_gives_well_formed_xml_with_its_lines_as_text(text):
    expected = [
        kept
        for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
        if (kept := infobox._NOT_XML.sub("", line).strip())
    ][: infobox.MAX_LINES] or [""]
    assert lines_of(infobox.body(text)) == expected
