"""Directory loaders: the TOML file's ``[phones]``, ``[people]`` and ``[groups]`` -> a Directory."""

from __future__ import annotations

from deskbot.directory.snapshot import Directory, Person, Phone
from deskbot.settings.schema import Settings

SOURCES = ("slack", "matrix")  # the [people] keys that hold a chat id


def from_settings(settings: Settings) -> Directory:
    fleet = settings.message.format
    phones = {
        ext: Phone(ext, p.uri, p.label, format=p.format or fleet, site=p.site, http=p.http or "")
        for ext, p in settings.phones.items()
    }
    people = {
        name: Person(
            name,
            p.name or name,
            p.phone,
            {source: chat_id for source in SOURCES if (chat_id := getattr(p, source))},
        )
        for name, p in settings.people.items()
    }
    groups = {name: tuple(g.members) for name, g in settings.groups.items()}
    domain = settings.sip.registrar.domain if settings.sip.registrar else None
    return Directory(phones, people, groups, domain, fleet)
