"""Snom XML and Yealink XML screens by SIP NOTIFY, against SIPp phones that check the format.

The builders are pure (any text gives well-formed XML holding it as text); the
SIPp phones (tests/sipp/screen.xml.in) answer only a NOTIFY with the maker's
Event, Subscription-State, Content-Type and root element, so a wrong header
shows up as "400 Not A ... NOTIFY" here. The XML they got is parsed back.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest
from conftest import SippPhone, run_deskbot
from hypothesis import given
from hypothesis import strategies as st
from test_phones import EVIL, config_for, infobox_lines, run_json

from deskbot.senders.screens import cisco, poly, snom, xmltext, yealink
from deskbot.senders.screens.xmltext import SoftKey

ROOTS = {
    "snom-xml": "SnomIPPhoneText",
    "yealink-xml": "YealinkIPPhoneTextScreen",
}


def screen_of(phone: SippPhone, fmt: str) -> tuple[str, list[str]]:
    """The one NOTIFY the phone got -> (title, lines of text); the XML must parse."""
    [notify] = phone.wait_received(1)
    assert int(notify.headers["content-length"]) == len(notify.body)
    root = ET.fromstring(notify.body)
    assert root.tag == ROOTS[fmt]
    return root.findtext("Title") or "", text_lines(root, fmt)


def text_lines(root: ET.Element, fmt: str) -> list[str]:
    text = root.find("Text")
    assert text is not None
    if fmt == "snom-xml":  # lines are split by <br/> and nothing else is an element
        assert {el.tag for el in text.iter()} <= {"Text", "br"}
        return [text.text or ""] + [br.tail or "" for br in text.findall("br")]
    assert list(text) == []  # Yealink: character data only, lines by line breaks
    return (text.text or "").split("\n")


@pytest.mark.parametrize("fmt", ["snom-xml", "yealink-xml"])
def test_a_screen_phone_gets_its_makers_notify_with_the_text_as_text(sipp, tmp_path, fmt):
    phone = sipp(200, screen=fmt)
    cfg = config_for(tmp_path, {"486": (phone.uri(), fmt)})
    result, [row] = run_json("send", cfg, "486", EVIL)
    assert result.returncode == 0, result.stderr
    assert (row["code"], row["reason"], row["outcome"]) == (200, "OK", "delivered")
    assert screen_of(phone, fmt) == ("deskbot", [EVIL])


@pytest.mark.parametrize("fmt", ["snom-xml", "yealink-xml"])
def test_each_line_of_the_text_is_a_line_of_the_screen(sipp, tmp_path, fmt):
    phone = sipp(200, screen=fmt)
    cfg = config_for(tmp_path, {"486": (phone.uri(), fmt)})
    result = run_deskbot("send", "-c", str(cfg), "486", "Fire drill 14:00\n\nleave by ☕ stairs")
    assert result.returncode == 0, result.stderr
    assert screen_of(phone, fmt)[1] == ["Fire drill 14:00", "leave by ☕ stairs"]


def test_one_send_gives_every_sip_format_its_own_request(sipp, tmp_path):
    classic, box = sipp(200), sipp(200, method="NOTIFY")
    snom_phone, yealink_phone = sipp(200, screen="snom-xml"), sipp(200, screen="yealink-xml")
    old_yealink = sipp(489, screen="yealink-xml")  # push_xml.sip_notify off
    cfg = config_for(
        tmp_path,
        {
            "486": (classic.uri("486"), "message"),
            "487": (box.uri("487"), "snom-infobox"),
            "488": (snom_phone.uri("488"), "snom-xml"),
            "489": (yealink_phone.uri("489"), "yealink-xml"),
            "490": (old_yealink.uri("490"), "yealink-xml"),
        },
        extra='[groups.floor]\nmembers = ["486", "487", "488", "489", "490"]\n',
    )
    result, rows = run_json("send", cfg, "@floor", "lunch is here")
    assert result.returncode == 1, result.stderr
    answers = {r["target"]: (r["code"], r["reason"]) for r in rows}
    assert answers == {
        "486": (200, "OK"),
        "487": (200, "OK"),
        "488": (200, "OK"),
        "489": (200, "OK"),
        "490": (489, "Bad Event"),
    }
    [message] = classic.wait_received(1)
    assert message.body == b"lunch is here"
    assert infobox_lines(box) == ["lunch is here"]
    assert screen_of(snom_phone, "snom-xml") == ("deskbot", ["lunch is here"])
    assert screen_of(yealink_phone, "yealink-xml") == ("deskbot", ["lunch is here"])


def test_a_text_that_fits_a_message_but_not_a_snom_screen_goes_to_no_phone(sipp, tmp_path):
    classic, snom_phone = sipp(200), sipp(200, screen="snom-xml")
    cfg = config_for(
        tmp_path,
        {"486": (classic.uri("486"), "message"), "487": (snom_phone.uri("487"), "snom-xml")},
        extra='[message]\nmax_chars = 1000\n[groups.floor]\nmembers = ["486", "487"]\n',
    )
    text = 'A&B "C" <D> ' * 40  # 480 bytes as it is; 1,400 escaped
    result = run_deskbot("send", "-c", str(cfg), "@floor", text)
    assert result.returncode == 2
    assert "bytes on Snom XML phones, escaped as XML, where a SIP message takes 1200" in (
        result.stderr
    )
    assert classic.received() == [] and snom_phone.received() == []


# -- the builders (pure) ------------------------------------------------------------


def parse(fmt: str, text: str, name: str = "", keys: tuple[SoftKey, ...] = ()) -> ET.Element:
    build = {
        "snom-xml": snom.body,
        "yealink-xml": yealink.body,
        "poly-push": poly.body,
        "cisco-xml": cisco.screen,
    }[fmt]
    built = build(text, name, keys)
    return ET.fromstring(built.encode("iso-8859-1" if fmt == "cisco-xml" else "utf-8"))


@pytest.mark.parametrize("fmt", ["snom-xml", "yealink-xml"])
def test_the_title_is_the_sender_one_line_and_markup_stays_characters(fmt):
    root = parse(fmt, "hi", name="</Title><Text>x</Text>\n & ]]>")
    assert root.findtext("Title") == "</Title><Text>x</Text> & ]]>"
    assert [el.tag for el in root] == ["Title", "Text"]


def test_soft_keys_are_the_makers_own_elements_with_the_url_as_text():
    url = "http://10.0.0.5:9122/c/tok?a=1&b=2"
    keys = (SoftKey("OK", url),)
    snom_key = parse("snom-xml", "t", keys=keys).find("SoftKeyItem")
    assert snom_key is not None
    assert [snom_key.findtext(n) for n in ("Name", "Label", "URL")] == ["F1", "OK", url]
    yealink_key = parse("yealink-xml", "t", keys=keys).find("SoftKey")
    assert yealink_key is not None and yealink_key.get("index") == "1"
    assert [yealink_key.findtext(n) for n in ("Label", "URI")] == ["OK", url]
    poly_key = parse("poly-push", "t", keys=keys).find("Data/softkey")
    assert poly_key is not None and poly_key.get("action") == f"SoftKey:Fetch;{url}"
    cisco_key = parse("cisco-xml", "t", keys=keys).find("SoftKeyItem")
    assert cisco_key is not None
    assert [cisco_key.findtext(n) for n in ("Name", "URL", "Position")] == ["OK", url, "1"]


def expected_lines(text: str) -> list[str]:
    return [
        kept
        for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
        if (kept := xmltext.NOT_XML.sub("", line).strip())
    ][: xmltext.MAX_LINES] or [""]


@given(st.text(), st.text(max_size=60))
def test_any_text_and_title_give_well_formed_screens_holding_them_as_text(text, name):
    lines = expected_lines(text)
    for fmt in ("snom-xml", "yealink-xml"):
        root = parse(fmt, text, name)
        assert root.findtext("Title") == xmltext.title(name)
        assert text_lines(root, fmt) == lines
    data = parse("poly-push", text, name).find("Data")
    assert data is not None and [p.text or "" for p in data.findall("p")] == lines
    cisco_text = parse("cisco-xml", text, name).findtext("Text") or ""
    # XML reads CR/LF as LF; Cisco's ISO-8859-1 shows what it cannot as "?"
    assert cisco_text.split("\n") == [cisco.latin1(line) for line in lines]
