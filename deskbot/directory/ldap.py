"""The LDAP / Active Directory loader: people, extensions and groups -> a Directory.

``fetch`` binds and searches (blocking: run it in a thread); ``build`` turns
the entries into a ``Directory`` (pure). Names are lower-cased (a group's
spaces become ``-``); an extension is the digits of the attribute's value
(``+49 30 1234-486`` -> ``49301234486``; ``extension_digits = 3`` keeps the
last three: ``486``). An entry whose name or extension does not fit is left
out and counted in ``Fetched.skipped``; a group member is a person or group
of the same result (found by DN), so nested groups are followed either way.
"""

from __future__ import annotations

import contextlib
import math
import re
import ssl
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from deskbot.directory.snapshot import Directory, Person, Phone
from deskbot.settings.schema import EXTENSION_RE, NAME_RE, Ldap

PAGE_SIZE = 500  # entries per page of the paged-results control (AD answers at most 1,000)

# Per preset, the attribute or filter a key means when it is left out.
PRESETS: dict[str, dict[str, str]] = {
    "openldap": {
        "people_filter": "(objectClass=inetOrgPerson)",
        "groups_filter": "(objectClass=groupOfNames)",
        "name_attribute": "uid",
        "display_attribute": "cn",
        "extension_attribute": "telephoneNumber",
        "group_name_attribute": "cn",
        "member_attribute": "member",
    },
    "ad": {
        # enabled user accounts only (bit 2 of userAccountControl is "disabled")
        "people_filter": "(&(objectCategory=person)(objectClass=user)"
        "(!(userAccountControl:1.2.840.113556.1.4.803:=2)))",
        "groups_filter": "(objectClass=group)",
        "name_attribute": "sAMAccountName",
        "display_attribute": "displayName",
        "extension_attribute": "ipPhone",
        "group_name_attribute": "cn",
        "member_attribute": "member",
    },
}
_NOT_DIGITS = re.compile(r"[\s().\-/]+")


class LdapError(Exception):
    """LDAP could not be read; the message names the server and what failed, never a secret."""


@dataclass(frozen=True)
class Fetched:
    directory: Directory
    skipped: list[str] = field(default_factory=list)  # "3 people without an extension", ...


def option(settings: Ldap, key: str) -> str:
    """A key's value, else its preset's default."""
    value = getattr(settings, key)
    return str(value) if value is not None else PRESETS[settings.preset][key]


def extension_of(value: str, digits: int | None = None) -> str | None:
    """``+49 30 1234-486`` -> ``49301234486`` (or its last ``digits``); None if not a number."""
    plain = _NOT_DIGITS.sub("", value.strip()).removeprefix("+")
    if not plain.isascii() or not plain.isdigit():
        return None
    if digits is not None:
        plain = plain[-digits:]
    return plain if EXTENSION_RE.fullmatch(plain) else None


def name_of(value: str) -> str | None:
    """A directory name as deskbot's commands spell it, or None if it cannot be one."""
    name = re.sub(r"\s+", "-", value.strip().lower())
    return name if NAME_RE.fullmatch(name) else None


def _first(attributes: Mapping[str, Any], key: str) -> str:
    value = attributes.get(key)
    if isinstance(value, list):
        value = value[0] if value else ""
    return str(value).strip() if value is not None else ""


def _all(attributes: Mapping[str, Any], key: str) -> list[str]:
    value = attributes.get(key)
    if value is None:
        return []
    return [str(v) for v in value] if isinstance(value, list) else [str(value)]


def _dn(dn: str) -> str:
    """DNs compared as LDAP does for our purpose: case and spaces after commas ignored."""
    return re.sub(r",\s+", ",", dn.strip().lower())


def build(
    settings: Ldap,
    people: Iterable[tuple[str, Mapping[str, Any]]],
    groups: Iterable[tuple[str, Mapping[str, Any]]],
) -> Fetched:
    """(DN, attributes) of people and of groups -> the directory they make (pure)."""
    name_key, display_key = (
        option(settings, "name_attribute"),
        option(settings, "display_attribute"),
    )
    ext_key = option(settings, "extension_attribute")
    ids = {
        source: key
        for source, key in (
            ("slack", settings.slack_attribute),
            ("matrix", settings.matrix_attribute),
        )
        if key
    }
    phones: dict[str, Phone] = {}
    found: dict[str, Person] = {}
    by_dn: dict[str, str] = {}
    bad_name = no_extension = twice = 0
    for dn, attrs in sorted(people, key=lambda entry: _dn(entry[0])):
        name = name_of(_first(attrs, name_key))
        if name is None:
            bad_name += 1
            continue
        if name in found:
            twice += 1
            continue
        display = _first(attrs, display_key) or name
        extension = extension_of(_first(attrs, ext_key), settings.extension_digits)
        if extension is None:
            no_extension += 1
        elif extension not in phones:  # people sharing a desk share its phone
            uri = settings.phone_uri.replace("{extension}", extension)
            phones[extension] = Phone(extension, uri, display)
        chat = {source: v for source, key in ids.items() if (v := _first(attrs, key))}
        found[name] = Person(name, display, extension, chat)
        by_dn[_dn(dn)] = name
    group_key, member_key = (
        option(settings, "group_name_attribute"),
        option(settings, "member_attribute"),
    )
    members_of: dict[str, list[str]] = {}
    group_dns: dict[str, str] = {}
    bad_group = 0
    for dn, attrs in sorted(groups, key=lambda entry: _dn(entry[0])):
        name = name_of(_first(attrs, group_key))
        if name is None or name in found or name in members_of:
            bad_group += 1
            continue
        members_of[name] = _all(attrs, member_key)
        group_dns[_dn(dn)] = "@" + name
    refs = {**by_dn, **group_dns}
    result = {
        name: tuple(dict.fromkeys(ref for m in members if (ref := refs.get(_dn(m)))))
        for name, members in members_of.items()
    }
    skipped = [
        f"{n} {(one if n == 1 else many)} {what}"
        for n, one, many, what in (
            (bad_name, "person", "people", f"without a usable {name_key}"),
            (twice, "person", "people", f"with a {name_key} already taken"),
            (no_extension, "person", "people", f"without an extension in {ext_key}"),
            (bad_group, "group", "groups", f"without a usable, unique {group_key}"),
        )
        if n
    ]
    return Fetched(Directory(phones, found, result), skipped)


def _connection(settings: Ldap, user: str, password: str) -> Any:
    """An ldap3 connection to the server, not yet opened; LdapError for a bad setting."""
    import ldap3
    from ldap3.core.exceptions import LDAPException

    try:
        tls = None
        if settings.url.startswith("ldaps://") or settings.start_tls:
            tls = ldap3.Tls(validate=ssl.CERT_REQUIRED, ca_certs_file=settings.ca_file)
        server = ldap3.Server(
            settings.url, get_info=ldap3.NONE, tls=tls, connect_timeout=settings.timeout
        )
        return ldap3.Connection(
            server,
            user=user,
            password=password,
            receive_timeout=math.ceil(settings.timeout),  # ldap3 packs it as an integer
            raise_exceptions=True,
            read_only=True,
            auto_range=True,  # AD hands out large `member` lists in ranges of 1,500
        )
    except LDAPException as exc:
        raise LdapError(f"LDAP {settings.url}: {_why(exc)}") from None


class _Step:
    """What a connection was doing when it failed: the error names it."""

    now = "connect"


@contextlib.contextmanager
def _opened(settings: Ldap, dn: str, password: str, step: _Step) -> Iterator[Any]:
    """A connection to ``settings.url`` as ``dn`` (TLS started if asked), unbound after.

    An LDAP or socket error inside (also the caller's binds and searches) becomes one
    LdapError, ``LDAP URL: cannot STEP: why``, never naming the password."""
    from ldap3.core.exceptions import LDAPException

    conn = _connection(settings, dn, password)
    try:
        conn.open()
        if settings.start_tls:
            step.now = "start TLS"
            conn.start_tls()
        yield conn
    except LDAPException as exc:
        raise LdapError(f"LDAP {settings.url}: cannot {step.now}: {_why(exc)}") from None
    except OSError as exc:
        raise LdapError(f"LDAP {settings.url}: cannot {step.now}: {exc.strerror or exc}") from None
    finally:
        with contextlib.suppress(Exception):  # the connection may be gone already
            conn.unbind()


def check_password(settings: Ldap, service_password: str, name: str, password: str) -> bool:
    """Whether ``password`` is the directory password of the person deskbot calls ``name``.

    Search, then bind: deskbot's own account finds the one person entry whose name
    attribute is ``name`` (escaped for the filter, RFC 4515), then a second connection
    binds as that entry's DN with ``password``. An empty password is False without
    asking (LDAP takes an empty simple bind as anonymous). LdapError: the server could
    not be asked (never naming the password)."""
    import ldap3
    from ldap3.core.exceptions import LDAPInvalidCredentialsResult, LDAPSizeLimitExceededResult
    from ldap3.utils.conv import escape_filter_chars

    if not password or len(password) > 1024 or name_of(name) != name:
        return False
    key = option(settings, "name_attribute")
    wanted = f"(&{option(settings, 'people_filter')}({key}={escape_filter_chars(name)}))"
    step = _Step()
    with _opened(settings, settings.bind_dn, service_password, step) as finder:
        step.now = f"bind as {settings.bind_dn}"
        finder.bind()
        step.now = f"search {settings.base}"
        try:
            finder.search(settings.base, wanted, ldap3.SUBTREE, attributes=[key], size_limit=2)
        except LDAPSizeLimitExceededResult:  # the name is not unique: nobody signs in with it
            return False
        found = [e for e in finder.response or () if e.get("type") == "searchResEntry"]
    if len(found) != 1 or name_of(_first(found[0]["attributes"], key)) != name:
        return False
    step = _Step()
    with _opened(settings, str(found[0]["dn"]), password, step) as person:
        step.now = "bind as a person"
        try:
            person.bind()
        except LDAPInvalidCredentialsResult:
            return False
    return True


def fetch(settings: Ldap, password: str) -> Fetched:
    """Bind and read every person and group under ``base``; LdapError says what failed."""
    step = _Step()
    with _opened(settings, settings.bind_dn, password, step) as conn:
        step.now = f"bind as {settings.bind_dn}"
        conn.bind()
        step.now = f"search {settings.base}"
        people = _search(conn, settings, "people_filter", ["name", "display", "extension"])
        groups = _search(conn, settings, "groups_filter", ["group_name", "member"])
    return build(settings, people, groups)


def _search(conn: Any, settings: Ldap, which: str, keys: list[str]) -> list[tuple[str, Any]]:
    import ldap3

    attributes = [option(settings, f"{key}_attribute") for key in keys]
    if which == "people_filter":
        attributes += [a for a in (settings.slack_attribute, settings.matrix_attribute) if a]
    entries = conn.extend.standard.paged_search(
        settings.base,
        option(settings, which),
        ldap3.SUBTREE,
        attributes=attributes,
        paged_size=PAGE_SIZE,
        generator=True,
    )
    return [(e["dn"], e["attributes"]) for e in entries if e.get("type") == "searchResEntry"]


def _why(exc: Exception) -> str:
    """ldap3's exception -> the short reason (``invalidCredentials``), without the bind password."""
    description = getattr(exc, "description", None)
    message = getattr(exc, "message", None)
    if description:
        return f"{description}{f' ({message})' if message else ''}"
    return str(exc) or type(exc).__name__
