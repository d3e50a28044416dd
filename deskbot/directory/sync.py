"""The LDAP part of the directory: merged with the file's, judged, cached, never worse.

- ``merge``: the file's phones, people and groups win over LDAP's of the same
  extension or name (the file is the admin's override); LDAP adds the rest.
- ``judge``: an empty result, or one with fewer than half the people of the
  last good one, is refused (unless an admin asked for it: ``accept_drop``).
- ``LdapSync`` keeps the last good LDAP directory, in memory and in the
  store (so a restart with LDAP down still has it), and tells what happened.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from deskbot.directory.ldap import Fetched, LdapError, fetch
from deskbot.directory.loader import from_settings
from deskbot.directory.snapshot import Directory, Person, Phone
from deskbot.settings.checks import Names, cross_check
from deskbot.settings.schema import Config, Ldap
from deskbot.store.base import CommandLog

log = logging.getLogger("deskbot.directory")

CACHE_KEY = "ldap"


def merge(file: Directory, ldap: Directory | None) -> tuple[Directory, list[str]]:
    """The file's directory with LDAP's added; the names LDAP had that the file overrides."""
    if ldap is None:
        return file, []
    overridden = [
        *(f"phone {ext}" for ext in ldap.phones if ext in file.phones),
        *(name for name in ldap.people if name in file.people or name in file.groups),
        *(f"@{name}" for name in ldap.groups if name in file.groups or name in file.people),
    ]
    # LDAP knows no formats: its phones take the fleet's ([message] format)
    fleet = file.default_format
    phones = {ext: replace(p, format=fleet) for ext, p in ldap.phones.items()}
    phones.update(file.phones)
    taken = set(file.people) | set(file.groups)
    file_ids = {(s, i) for p in file.people.values() for s, i in p.ids.items()}
    people: dict[str, Person] = {}
    for name, p in ldap.people.items():
        if name in taken:
            continue
        ids = {s: i for s, i in p.ids.items() if (s, i) not in file_ids}  # the file's person has it
        people[name] = Person(p.name, p.display, p.phone, ids) if ids != p.ids else p
    for name, p in file.people.items():  # a file person may sit at an LDAP extension
        people[name] = (
            p if p.phone is None or p.phone in phones else Person(p.name, p.display, None, p.ids)
        )
    groups = {n: g for n, g in ldap.groups.items() if n not in taken}
    groups.update(file.groups)
    return Directory(phones, people, groups, file.domain, fleet), overridden


def sized(d: Directory, all_three: bool = False) -> str:
    """'1 person' / '3 people' (and phones and groups): counts as a person reads them."""

    def count(n: int, one: str, many: str) -> str:
        return f"{n} {one if n == 1 else many}"

    parts = [count(len(d.people), "person", "people")]
    if all_three:
        parts += [count(len(d.phones), "phone", "phones"), count(len(d.groups), "group", "groups")]
    return ", ".join(parts)


def judge(last: Directory | None, new: Directory, accept_drop: bool = False) -> str | None:
    """Why ``new`` must not replace ``last``, or None when it may."""
    if not new.people:
        return "it has no people (a wrong filter or base, or an empty server)"
    if last is not None and not accept_drop and len(new.people) * 2 < len(last.people):
        return (
            f"it has {sized(new)}, the last good one {len(last.people)} "
            "(more than half would be gone)"
        )
    return None


def dumps(directory: Directory) -> str:
    return json.dumps(
        {
            "phones": [[p.extension, p.uri, p.label] for p in directory.phones.values()],
            "people": [
                [p.name, p.display, p.phone, dict(p.ids)] for p in directory.people.values()
            ],
            "groups": directory.groups,
        },
        ensure_ascii=False,
    )


def loads(text: str) -> Directory:
    data = json.loads(text)
    phones = {ext: Phone(ext, uri, label) for ext, uri, label in data["phones"]}
    people = {n: Person(n, d, ph, ids) for n, d, ph, ids in data["people"]}
    groups = {name: tuple(members) for name, members in data["groups"].items()}
    return Directory(phones, people, groups)


@dataclass(frozen=True)
class Outcome:
    """One sync: applied or not, and what a person should hear of it."""

    applied: bool
    message: str  # for the log
    tell_admins: str | None = None  # a refusal admins must look at (once per kind)


class LdapSync:
    """The last good LDAP directory; ``sync`` fetches in a thread and keeps or replaces it."""

    def __init__(
        self,
        store: CommandLog | None,
        fetcher: Callable[[Ldap, str], Fetched] = fetch,
        clock: Callable[[], float] = time.time,
    ):
        self.store = store
        self.fetcher = fetcher
        self.clock = clock
        self.current: Directory | None = None
        self.since: float | None = None  # when the current one was fetched
        self._refused: str | None = None  # the last refusal admins were told of
        self.error: str | None = None  # why the last sync did not replace the directory
        cached = store.cached_directory(CACHE_KEY) if store else None
        if store is not None and cached is not None:
            try:
                self.current, self.since = loads(cached[1]), cached[0]
            except (ValueError, KeyError, TypeError) as exc:
                log.warning("the cached LDAP directory in %s is unreadable: %s", store.path, exc)

    def health(self) -> dict[str, object]:
        """For /healthz: what deskbot sends with, how old it is, and the last sync's trouble."""
        people = len(self.current.people) if self.current else 0
        age = round(self.clock() - self.since) if self.since is not None else None
        return {"people": people, "age_seconds": age, "error": self.error}

    def age(self) -> str:
        if self.since is None:
            return "none cached"
        return time.strftime("cached %Y-%m-%d %H:%M:%S", time.localtime(self.since))

    async def sync(self, settings: Ldap, password: str, accept_drop: bool = False) -> Outcome:
        """Fetch (in a thread: chat commands go on) and keep the result if it is good."""
        try:
            fetched, text = await asyncio.to_thread(self._fetch, settings, password)
        except LdapError as exc:
            self.error = str(exc)
            kept = self._kept()
            return Outcome(False, f"{exc}; {kept}")
        refusal = judge(self.current, fetched.directory, accept_drop)
        if refusal:
            self.error = f"sync refused: {refusal}"
            text = f"LDAP {settings.url}: sync refused: {refusal}; {self._kept()}"
            tell = None
            if refusal != self._refused:
                self._refused = refusal
                tell = (
                    f"deskbot: {text}. If the directory is right, send deskbot SIGHUP "
                    "(systemctl reload deskbot) to take it."
                )
            return Outcome(False, text, tell)
        self._refused = self.error = None
        self.current, self.since = fetched.directory, self.clock()
        if self.store is not None:
            await asyncio.to_thread(self.store.cache_directory, CACHE_KEY, self.since, text)
        d = fetched.directory
        notes = f" (left out: {', '.join(fetched.skipped)})" if fetched.skipped else ""
        return Outcome(
            True,
            f"LDAP {settings.url}: {sized(d, all_three=True)}{notes}",
        )

    def _fetch(self, settings: Ldap, password: str) -> tuple[Fetched, str]:
        fetched = self.fetcher(settings, password)
        return fetched, dumps(fetched.directory)  # serialised here too: off the event loop

    def _kept(self) -> str:
        if self.current is None:
            return "no LDAP directory yet: only the file's phones, people and groups"
        return f"keeping the last good LDAP directory ({sized(self.current)}, {self.age()})"


def reference_problems(cfg: Config, ldap: Directory) -> list[str]:
    """The file's references checked against LDAP's names too (check-config, a reload)."""
    names = Names(frozenset(ldap.phones), frozenset(ldap.people), frozenset(ldap.groups))
    return [f"{cfg.path}: {key}: {msg}" for key, msg in cross_check(cfg.settings, names)]


def check_config(cfg: Config) -> tuple[list[str], str]:
    """``check-config`` with ``[directory.ldap]``: bind and search now, then the references.

    Problems as ``PATH: key: what is wrong`` lines, and a summary part when there are none.
    """
    settings = cfg.settings.directory.ldap
    assert settings is not None
    try:
        fetched = fetch(settings, cfg.secret(settings.password_env))
    except LdapError as exc:
        return [f"{cfg.path}: directory.ldap: {exc}"], ""
    ldap = fetched.directory
    problems = reference_problems(cfg, ldap)
    if not ldap.people:
        problems.append(f"{cfg.path}: directory.ldap: LDAP {settings.url}: {judge(None, ldap)}")
    if problems:
        return problems, ""
    _, overridden = merge(from_settings(cfg.settings), ldap)
    parts = [sized(ldap, all_three=True)]
    if overridden:
        shown = ", ".join(overridden[:5]) + (
            f" and {len(overridden) - 5} more" if len(overridden) > 5 else ""
        )
        parts.append(f"the file overrides {shown}")
    parts += [f"left out {s}" for s in fetched.skipped]
    return [], f"; LDAP: {'; '.join(parts)}"
