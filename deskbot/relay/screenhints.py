"""Hints for the makers' screens (pure): what to check on a Poly, Cisco, Snom or Yealink phone.

``report.hint`` asks here first for a phone with a maker's format; an empty
answer leaves the general SIP hint.
"""

from __future__ import annotations

from deskbot.directory.snapshot import (
    CISCO_XML,
    INFOBOX,
    MESSAGE,
    POLY_PUSH,
    SNOM_XML,
    YEALINK_XML,
    Phone,
)
from deskbot.senders.base import Cause, Delivery

# how `who` names each format
FORMAT_NAMES = {
    MESSAGE: "SIP message",
    INFOBOX: "Snom Infobox",
    SNOM_XML: "Snom XML screen",
    YEALINK_XML: "Yealink XML screen",
    POLY_PUSH: "Poly push",
    CISCO_XML: "Cisco XML push",
}
PUSH_ACCOUNT = {
    POLY_PUSH: "apps.push.username and apps.push.password on the phone",
    CISCO_XML: "the phone's authenticationURL (or MPP's XML user name and password)",
}
SWITCH_ON = {
    POLY_PUSH: "apps.push.messageType (1 Normal or 5 All) and apps.push.serverRootURL",
    CISCO_XML: "Web Access and the XML push (CGI/Execute) on the phone",
}


def push_hint(delivery: Delivery, phone: Phone) -> str:
    """Poly and Cisco: the HTTP answer, a Cisco error object, a timeout or no connection."""
    code, fmt, reason = delivery.code, phone.format, delivery.reason
    account = PUSH_ACCOUNT.get(fmt, "the phone's push account")
    wrong_account = (
        f"the phone refused deskbot's push account: [push] username and password must match "
        f"{account}"
    )
    switch = SWITCH_ON.get(fmt, "push")
    if delivery.cause is Cause.PHONE_ERROR:
        if "Error 4" in reason:
            return wrong_account
        if "Error 1" in reason:
            return "the phone could not parse the push (CiscoIPPhoneError 1): see its log"
        return "the phone took the push but could not show it: check it can reach [desk] url"
    if delivery.cause is Cause.TIMEOUT or code == 408:
        return (
            "no answer in time: the phone is off or unreachable, or a firewall drops HTTP "
            "to it; check its web address (the phone's http key) from deskbot's host"
        )
    if delivery.cause is Cause.TRANSPORT:
        if code == 495:
            return "the phone's https certificate is not trusted: put its CA in [push] ca_file"
        if code == 503 and "[desk]" in reason:
            return "deskbot's [desk] endpoint is not listening: cisco-xml phones need it"
        return "no HTTP connection to the phone: check it is on and its web server is enabled"
    if code in (401, 407):
        return wrong_account
    if code == 403:
        return f"the phone refuses pushes from deskbot: allow deskbot's address, turn on {switch}"
    if code == 404:
        return f"the phone has push switched off (404): turn on {switch}"
    if code in (400, 413, 415):
        return "the phone refused the push as malformed or too large: shorten the text"
    if 300 <= code < 400:
        return "the phone's web address redirects elsewhere (not followed): fix its http key"
    if code >= 500:
        return "the phone's web server failed: reboot it or try again in a minute"
    return "the phone refused the push: see its log"


def notify_hint(code: int, fmt: str) -> str:
    """Snom XML and Yealink XML by SIP NOTIFY; empty where the general hint fits."""
    if fmt == YEALINK_XML:
        switch = "push_xml.sip_notify = 1 on the phone"
    elif fmt == SNOM_XML:
        switch = "xml_notify on and deskbot in mb_trusted_hosts on the phone"
    else:
        return ""
    if code == 489:
        return (
            f'the phone does not take this XML event: turn on {switch}, or use format = "message"'
        )
    if code in (405, 501):
        return 'the phone does not take SIP NOTIFY: set format = "message" for it'
    if code == 415:
        return f"the phone does not take this XML type: check its maker's format, or set {switch}"
    if code == 403:
        return f"the phone refuses XML from deskbot: turn on {switch}"
    if code in (401, 407):
        return (
            "the phone wants the NOTIFY authenticated (deskbot answers challenges only for "
            "text messages): let it take XML from deskbot's address without one"
        )
    return ""
