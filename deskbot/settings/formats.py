"""The cross-checks of phone formats: what an HTTP format or a Cisco screen needs configured."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from deskbot.settings.schema import Settings

HTTP_FORMATS = ("poly-push", "cisco-xml")


def problems(s: Settings) -> list[tuple[str, str]]:
    """An HTTP format without ``[push]``, cisco-xml without ``[desk] url``, a site's HTTP phone."""
    found: list[tuple[str, str]] = []
    fleet = s.message.format
    uses = {ext: p.format or fleet for ext, p in s.phones.items()}
    if fleet in HTTP_FORMATS and s.directory.ldap is not None:
        uses["(LDAP)"] = fleet
    for ext, fmt in uses.items():
        key = "message.format" if ext == "(LDAP)" or s.phones[ext].format is None else None
        key = key or f"phones.{ext}.format"
        if fmt in HTTP_FORMATS and s.push is None:
            found.append((key, f"{fmt} pushes over HTTP with the [push] account: add [push]"))
        if fmt == "cisco-xml" and (s.desk is None or s.desk.url is None):
            found.append((key, "cisco-xml phones fetch their screen from deskbot: add [desk] url"))
        if fmt in HTTP_FORMATS and ext in s.phones and s.phones[ext].site:
            found.append(
                (key, f"{fmt} is pushed by this deskbot only; a site's edge sends SIP formats")
            )
    for ext, p in s.phones.items():
        if p.http is not None and uses[ext] not in HTTP_FORMATS:
            found.append(
                (f"phones.{ext}.http", f"is used by poly-push and cisco-xml only, not {uses[ext]}")
            )
    return list(dict.fromkeys(found))  # a fleet default names its key once
