"""The directory: a snapshot of phones, people and groups, and target resolution (pure).

A ``Directory`` is a value built by a loader (``loader.from_settings`` for
the TOML file) and handed to the relay whole; a reload builds a new one, so
keeping the last good directory is keeping the old value. A person's chat
identities are a mapping from source name (``slack``, ``matrix``) to id, so
a new source needs no new field.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from deskbot import sipuri

# A chat mention written in TARGETS, per source: its user id is the first group.
MENTIONS = {
    "slack": re.compile(r"^<@([UW][A-Z0-9]{2,20})(?:\|[^>]*)?>$"),
    "matrix": re.compile(r"^(@[^:\s]+:\S+)$"),
}
BY_NAME = ("console", "shell", "web")  # sources whose user id is the person's directory name
MAX_TARGET_PARTS = 100


class TargetError(ValueError):
    """A target that does not resolve; the message names the part and what to do."""


# how a phone is sent text: a SIP MESSAGE, a maker's screen by SIP NOTIFY (Snom Infobox,
# Snom XML, Yealink XML), or by HTTP push (Poly, Cisco); deskbot.senders.screens builds them
MESSAGE, INFOBOX = "message", "snom-infobox"
SNOM_XML, YEALINK_XML, POLY_PUSH, CISCO_XML = "snom-xml", "yealink-xml", "poly-push", "cisco-xml"
FORMATS = (MESSAGE, INFOBOX, SNOM_XML, YEALINK_XML, POLY_PUSH, CISCO_XML)
HTTP_FORMATS = (POLY_PUSH, CISCO_XML)


MAX_LABEL_CHARS = 64  # a phone's label or a person's name, as reports show it


def label(text: str) -> str:
    """A label or name as one plain line: control, format and bidi characters dropped,
    whitespace (CR, LF, TAB) one space, at most MAX_LABEL_CHARS characters."""
    text = text[: MAX_LABEL_CHARS * 4]  # 200 KB from LDAP is not walked character by character
    kept = "".join(c if c.isprintable() else " " if c.isspace() else "" for c in text)
    return " ".join(kept.split())[:MAX_LABEL_CHARS].strip()


def _clean(text: str) -> bool:
    return len(text) <= MAX_LABEL_CHARS and text.isprintable() and text == text.strip()


@dataclass(frozen=True, slots=True)
class Phone:
    extension: str
    uri: str
    label: str = ""
    format: str = MESSAGE  # one of FORMATS; the sender picks the request by it
    site: str = ""  # "" = this deskbot's own SIP agent, else the office whose edge sends it
    http: str = ""  # HTTP formats: the phone's web address; "": http:// + the uri's host

    @property
    def title(self) -> str:
        return f"{self.extension} ({self.label})" if self.label else self.extension


@dataclass(frozen=True, slots=True)
class Person:
    name: str
    display: str
    phone: str | None
    ids: Mapping[str, str] = field(default_factory=dict)  # source -> that source's user id


@dataclass(frozen=True, slots=True)
class Resolution:
    phones: tuple[Phone, ...]
    groups: tuple[str, ...]  # groups named in the token, for the summary line


class Directory:
    """Phones by extension, people and groups by name; ``domain`` places unlisted extensions."""

    def __init__(
        self,
        phones: Mapping[str, Phone],
        people: Mapping[str, Person],
        groups: Mapping[str, tuple[str, ...]],
        domain: str | None = None,
        default_format: str = MESSAGE,
    ):
        # labels and display names come from TOML and LDAP: cleaned here, once for all uses
        self.phones = {
            ext: p if _clean(p.label) else replace(p, label=label(p.label))
            for ext, p in phones.items()
        }
        self.default_format = default_format  # for extensions placed by `domain`
        self.people = {
            name: p if _clean(p.display) else replace(p, display=label(p.display) or name)
            for name, p in people.items()
        }
        self.groups = dict(groups)
        self.domain = domain
        self._by_id = {
            (source, chat_id): p for p in self.people.values() for source, chat_id in p.ids.items()
        }

    def person_by(self, source: str, user_id: str) -> Person | None:
        if source in BY_NAME:
            return self.people.get(user_id)
        return self._by_id.get((source, user_id))

    def resolve(self, token: str) -> Resolution:
        """TARGETS token -> de-duplicated phones, in the order written.

        Every part that does not resolve is named in one TargetError.
        """
        parts = token.split(",")
        if not token or len(parts) > MAX_TARGET_PARTS:
            raise TargetError(f"give 1 to {MAX_TARGET_PARTS} comma-separated targets")
        phones: dict[str, Phone] = {}
        groups: list[str] = []
        seen: set[str] = set()  # groups expanded so far: each is walked once per token
        unknown: list[str] = []
        problems: list[str] = []
        for part in parts:
            if not part:
                problems.append(f"empty target in {_quote(token)}: remove the extra comma")
                continue
            try:
                found = self._resolve_one(part, groups, seen)
            except _Unknown:
                unknown.append(_quote(part))
                continue
            except TargetError as exc:
                problems.append(str(exc))
                continue
            for phone in found:
                phones.setdefault(phone.extension, phone)
        unknown = list(dict.fromkeys(unknown))
        if len(unknown) == 1:
            problems.insert(0, f"unknown target {unknown[0]}: not an extension, person or group")
        elif unknown:
            problems.insert(
                0, f"unknown targets {', '.join(unknown)}: not extensions, people or groups"
            )
        if unknown:
            problems.append("try `who` or `help`")
        if problems:
            raise TargetError("; ".join(dict.fromkeys(problems)))
        return Resolution(tuple(phones.values()), tuple(groups))

    def _resolve_one(self, part: str, groups: list[str], seen: set[str]) -> list[Phone]:
        if part.isascii() and part.isdigit():
            return [self._extension(part)]
        source, user_id = _mention(part)
        if source:
            person = self.person_by(source, user_id)
            if person is None:
                raise TargetError(
                    f"{_quote(part)} is not in the directory: ask an admin to add "
                    f"their {source.title()} id under [people]"
                )
            return [self._person_phone(person)]
        name = part.removeprefix("@").lower()
        if part.startswith("@") or name in self.groups:  # config keeps group and person names apart
            if name not in self.groups:
                raise TargetError(f"no group {_quote(part)}: try `help` for the groups")
            groups.append(name)
            return self._expand_group(name, seen)
        if name in self.people:
            return [self._person_phone(self.people[name])]
        raise _Unknown(part)

    def _extension(self, ext: str) -> Phone:
        if ext in self.phones:
            return self.phones[ext]
        if self.domain and len(ext) <= 15:
            return Phone(ext, sipuri.for_extension(ext, self.domain), format=self.default_format)
        raise TargetError(f"extension {ext} is not in the directory")

    def _person_phone(self, person: Person) -> Phone:
        if person.phone is None:
            raise TargetError(f"{person.name} has no desk phone in the directory")
        return self.phones[person.phone]

    def _expand_group(self, name: str, seen: set[str]) -> list[Phone]:
        """The group's phones, depth first in the order written; each group walked once."""
        phones: list[Phone] = []
        if name in seen:
            return phones
        seen.add(name)
        walk = [iter(self.groups[name])]  # a stack, not recursion: chains may be long
        while walk:
            member = next(walk[-1], None)
            if member is None:
                walk.pop()
                continue
            ref = member.removeprefix("@")
            if member in self.phones:
                phones.append(self.phones[member])
            elif ref in self.groups:
                if ref not in seen:
                    seen.add(ref)
                    walk.append(iter(self.groups[ref]))
            elif ref in self.people and self.people[ref].phone:
                phones.append(self._person_phone(self.people[ref]))
        return phones


class _Unknown(TargetError):
    """A part that names nothing in the directory (reported together with the others)."""


def _mention(part: str) -> tuple[str, str]:
    """A chat mention -> (source, user id); ("", "") when the part is not one."""
    for source, pattern in MENTIONS.items():
        found = pattern.match(part)
        if found:
            return source, found.group(1)
    return "", ""


def _quote(text: str) -> str:
    shown = text if len(text) <= 40 else text[:39] + "…"
    return "'" + "".join(c if c.isprintable() else "?" for c in shown) + "'"
