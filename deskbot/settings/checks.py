"""The cross-checks: references between tables (phones, people, groups, clients, sites).

Each problem is a ``(key.path, message)`` pair; ``load`` prefixes the file's path.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from deskbot.settings import formats, plans
from deskbot.settings.schema import EXTENSION_RE, NAME_RE

if TYPE_CHECKING:
    from deskbot.settings.schema import Settings


@dataclass(frozen=True)
class Names:
    """What a reference may name: the file's phones, people and groups, plus LDAP's."""

    phones: frozenset[str]
    people: frozenset[str]
    groups: frozenset[str]
    where: str = "[people]"  # for messages: "[people] or LDAP"


def _names(s: Settings, ldap: Names | None) -> Names | None:
    """None while LDAP's names are not known yet (parsing): references are checked later."""
    if s.directory.ldap is None:
        return Names(frozenset(s.phones), frozenset(s.people), frozenset(s.groups))
    if ldap is None:
        return None
    return Names(
        frozenset(s.phones) | ldap.phones,
        frozenset(s.people) | ldap.people,
        frozenset(s.groups) | ldap.groups,
        "[people] or LDAP",
    )


def cross_check(s: Settings, ldap: Names | None = None) -> list[tuple[str, str]]:
    """References between tables: phones, people and groups must exist; ids unique.

    With ``[directory.ldap]`` a reference may name what LDAP has: ``ldap`` gives
    its names (check-config); without them references are not checked.
    """
    problems: list[tuple[str, str]] = []
    known = _names(s, ldap)
    for ext, phone in s.phones.items():
        if not EXTENSION_RE.fullmatch(ext):
            problems.append((f"phones.{ext}", "the key must be an extension of digits, like 486"))
        wanted = re.search(r";transport=([a-z]+)", phone.uri.lower())
        if wanted and wanted.group(1) != s.sip.transport:
            problems.append(
                (
                    f"phones.{ext}.uri",
                    f"asks for transport={wanted.group(1)} but deskbot listens on "
                    f"{s.sip.transport} ([sip] transport)",
                )
            )
    for name, person in s.people.items():
        if not NAME_RE.fullmatch(name):
            problems.append((f"people.{name}", "names are lower-case letters, digits, . _ -"))
        if known and person.phone is not None and person.phone not in known.phones:
            where = "[phones]" if s.directory.ldap is None else "[phones] or LDAP"
            problems.append((f"people.{name}.phone", f"phone {person.phone!r} is not in {where}"))
    for name in s.groups:
        if not NAME_RE.fullmatch(name):
            problems.append((f"groups.{name}", "names are lower-case letters, digits, . _ -"))
        if name in s.people:
            problems.append((f"groups.{name}", f"{name!r} is also a person; pick another name"))
    for name, group in s.groups.items():
        for i, member in enumerate(group.members):
            ref = member.removeprefix("@")
            if not known or ref in known.people or ref in known.groups or member in known.phones:
                continue
            problems.append(
                (f"groups.{name}.members[{i}]", f"{member!r} is not a phone, person or group")
            )
    problems += _group_cycles(s)
    for chat in ("slack", "matrix"):
        seen: dict[str, str] = {}
        for name, person in s.people.items():
            chat_id = getattr(person, chat)
            if chat_id is None:
                continue
            if chat_id in seen:
                problems.append(
                    (f"people.{name}.{chat}", f"{chat_id!r} is already used by {seen[chat_id]!r}")
                )
            seen[chat_id] = name
    if isinstance(s.access.senders, list):
        for i, who in enumerate(s.access.senders):
            if known and who not in known.people:
                problems.append((f"access.senders[{i}]", f"{who!r} is not in {known.where}"))
    for i, who in enumerate(s.access.admins):
        if known and who not in known.people:
            problems.append((f"access.admins[{i}]", f"{who!r} is not in {known.where}"))
    problems += _api_problems(s, known)
    problems += _web_problems(s, known)
    problems += _nats_problems(s)
    problems += plans.problems(s)
    problems += formats.problems(s)
    if s.sip.transport == "tcp" and s.sip.max_in_flight > 60:
        problems.append(("sip.max_in_flight", "over TCP at most 60 (pjsip handles ~64 sockets)"))
    return problems


def _api_problems(s: Settings, known: Names | None) -> list[tuple[str, str]]:
    if s.api is None:
        return []
    if not s.api.clients:
        return [("api.clients", "no clients: add [api.clients.NAME] with a token_env")]
    problems: list[tuple[str, str]] = []
    for name, client in s.api.clients.items():
        if not NAME_RE.fullmatch(name):  # "team:ops" must not share keys with "team"
            problems.append((f"api.clients.{name}", "names are lower-case letters, digits, . _ -"))
        for i, target in enumerate(client.targets or []):
            for part in target.split(","):
                ref = part.removeprefix("@")
                if not known or part in known.phones or ref in known.people or ref in known.groups:
                    continue
                problems.append(
                    (
                        f"api.clients.{name}.targets[{i}]",
                        f"{part!r} is not a phone, person or group",
                    )
                )
    return problems


def _web_problems(s: Settings, known: Names | None) -> list[tuple[str, str]]:
    if s.web is None:
        return []
    if s.web.ldap and s.directory.ldap is None:
        return [("web.ldap", "signing in with the directory password needs [directory.ldap]")]
    if not s.web.users and not s.web.ldap:
        return [
            ("web.users", 'nobody can sign in: add `name = "HASH"` from `deskbot hash-password`')
        ]
    return [
        (f"web.users.{name}", f"{name!r} is not in {known.where}: users are people")
        for name in s.web.users
        if known and name not in known.people
    ]


def _nats_problems(s: Settings) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    if s.nats is None:
        problems += [
            (f"phones.{ext}.site", "a phone with a site is sent over NATS: add a [nats] table")
            for ext, phone in s.phones.items()
            if phone.site
        ]
        if s.edge is not None:
            problems.append(("edge", "an edge takes its deliveries from NATS: add a [nats] table"))
        return problems
    ways = [k for k in ("credentials_env", "password_env", "token_env") if getattr(s.nats, k)]
    if not ways:
        problems.append(
            (
                "nats",
                "no login: give credentials_env, user with password_env, or token_env "
                "(on a NATS server without authentication anyone could ring the phones)",
            )
        )
    if s.nats.key_env is None:
        problems.append(
            (
                "nats.key_env",
                "required: the variable holding the secret jobs and answers are signed with "
                "(for example `openssl rand -hex 32`), the same at the front and the site's edges",
            )
        )
    if len(ways) > 1:
        problems.append(("nats", f"give one way to log in, not {' and '.join(ways)}"))
    if (s.nats.user is None) != (s.nats.password_env is None):
        problems.append(("nats", "user and password_env go together"))
    return problems


def live_problems(running: Settings, new: Settings) -> list[tuple[str, str]]:
    """What a running deskbot cannot take from a reloaded file, beyond ``cross_check``: its
    senders were built at its start, so a site phone needs [nats] to have been there."""
    if running.nats is not None:
        return []
    return [
        (
            f"phones.{ext}.site",
            "deskbot started without [nats]: nothing would take this phone to its site's "
            "edge; restart deskbot to apply [nats]",
        )
        for ext, phone in new.phones.items()
        if phone.site
    ]


def _group_cycles(s: Settings) -> list[tuple[str, str]]:
    """Each cycle among groups, found by one depth-first walk (linear in the directory)."""
    edges = {
        name: [
            ref
            for member in group.members
            if member not in s.phones and (ref := member.removeprefix("@")) in s.groups
        ]
        for name, group in s.groups.items()
    }
    problems: dict[tuple[str, str], None] = {}
    done: set[str] = set()
    for root in edges:
        if root in done:
            continue
        trail, where = [root], {root: 0}  # the walk's current path; where: a name's place on it
        members = [iter(edges[root])]
        while members:
            child = next(members[-1], None)
            if child is None:
                members.pop()
                done.add(trail[-1])
                del where[trail.pop()]
            elif child in where:  # back to a group on the current path: a cycle
                cycle = [*trail[where[child] :], child]
                problems[(f"groups.{child}.members", f"group cycle: {_trail(cycle)}")] = None
            elif child not in done:
                where[child] = len(trail)
                trail.append(child)
                members.append(iter(edges[child]))
    return list(problems)


def _trail(names: list[str], most: int = 8) -> str:
    if len(names) > most:
        names = [*names[:4], f"… {len(names) - 7} more …", *names[-3:]]
    return " -> ".join(names)
