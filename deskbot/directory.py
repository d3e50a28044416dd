"""Phones, people and groups; resolve a TARGETS token to phones (pure)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from deskbot import sipuri
from deskbot.config import Settings

_SLACK_MENTION_RE = re.compile(r"^<@([UW][A-Z0-9]{2,20})(\|[^>]*)?>$")
_MATRIX_ID_RE = re.compile(r"^@[^:\s]+:\S+$")
MAX_TARGET_PARTS = 100


class TargetError(ValueError):
    """A target that does not resolve; the message names the part and what to do."""


@dataclass(frozen=True, slots=True)
class Phone:
    extension: str
    uri: str
    label: str = ""

    @property
    def title(self) -> str:
        return f"{self.extension} ({self.label})" if self.label else self.extension


@dataclass(frozen=True, slots=True)
class Person:
    name: str
    display: str
    phone: str | None
    slack: str | None
    matrix: str | None


@dataclass(frozen=True, slots=True)
class Resolution:
    phones: tuple[Phone, ...]
    groups: tuple[str, ...]  # groups named in the token, for the summary line


class Directory:
    def __init__(self, settings: Settings):
        self.phones = {ext: Phone(ext, p.uri, p.label) for ext, p in settings.phones.items()}
        self.people = {
            name: Person(name, p.name or name, p.phone, p.slack, p.matrix)
            for name, p in settings.people.items()
        }
        self.groups = {name: tuple(g.members) for name, g in settings.groups.items()}
        self.domain = settings.sip.registrar.domain if settings.sip.registrar else None
        self._by_slack = {p.slack: p for p in self.people.values() if p.slack}
        self._by_matrix = {p.matrix: p for p in self.people.values() if p.matrix}

    def person_by_chat(self, chat: str, chat_id: str) -> Person | None:
        if chat == "slack":
            return self._by_slack.get(chat_id)
        if chat == "matrix":
            return self._by_matrix.get(chat_id)
        return self.people.get(chat_id) if chat in ("console", "shell") else None

    def resolve(self, token: str) -> Resolution:
        """TARGETS token -> de-duplicated phones, in the order written."""
        parts = token.split(",")
        if not token or len(parts) > MAX_TARGET_PARTS:
            raise TargetError(f"give 1 to {MAX_TARGET_PARTS} comma-separated targets")
        phones: dict[str, Phone] = {}
        groups: list[str] = []
        for part in parts:
            if not part:
                raise TargetError(f"empty target in {_quote(token)}: remove the extra comma")
            for phone in self._resolve_one(part, groups):
                phones.setdefault(phone.extension, phone)
        return Resolution(tuple(phones.values()), tuple(groups))

    def _resolve_one(self, part: str, groups: list[str]) -> list[Phone]:
        if part.isascii() and part.isdigit():
            return [self._extension(part)]
        chat, chat_id = _mention(part)
        if chat:
            person = self.person_by_chat(chat, chat_id)
            if person is None:
                raise TargetError(
                    f"{_quote(part)} is not in the directory: ask an admin to add "
                    f"their {chat.title()} id under [people]"
                )
            return [self._person_phone(person)]
        name = part.removeprefix("@").lower()
        if part.startswith("@") or name in self.groups:  # config keeps group and person names apart
            if name not in self.groups:
                raise TargetError(f"no group {_quote(part)}: try `help` for the groups")
            groups.append(name)
            return self._expand_group(name, set())
        if name in self.people:
            return [self._person_phone(self.people[name])]
        raise TargetError(
            f"unknown target {_quote(part)}: not an extension, person or group "
            "(try `who` or `help`)"
        )

    def _extension(self, ext: str) -> Phone:
        if ext in self.phones:
            return self.phones[ext]
        if self.domain and len(ext) <= 15:
            return Phone(ext, sipuri.for_extension(ext, self.domain))
        raise TargetError(f"extension {ext} is not in the directory")

    def _person_phone(self, person: Person) -> Phone:
        if person.phone is None:
            raise TargetError(f"{person.name} has no desk phone in the directory")
        return self.phones[person.phone]

    def _expand_group(self, name: str, seen: set[str]) -> list[Phone]:
        seen.add(name)
        phones: list[Phone] = []
        for member in self.groups[name]:
            ref = member.removeprefix("@")
            if member in self.phones:
                phones.append(self.phones[member])
            elif ref in self.groups:
                if ref not in seen:
                    phones += self._expand_group(ref, seen)
            elif ref in self.people and self.people[ref].phone:
                phones.append(self._person_phone(self.people[ref]))
        return phones


def _mention(part: str) -> tuple[str, str]:
    """A chat mention -> (chat, user id); ("", "") when the part is not one."""
    slack = _SLACK_MENTION_RE.match(part)
    if slack:
        return "slack", slack.group(1)
    if _MATRIX_ID_RE.match(part):
        return "matrix", part
    return "", ""


def _quote(text: str) -> str:
    shown = text if len(text) <= 40 else text[:39] + "…"
    return "'" + "".join(c if c.isprintable() else "?" for c in shown) + "'"
