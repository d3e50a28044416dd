"""The tables of the config file: frozen dataclasses, one per TOML table.

pydantic validates them (``deskbot.settings.load``) but is not imported here:
the annotations are strings whose validators (``deskbot.settings.fields``) are
resolved only when a file is validated, so a cached file's settings load
without pydantic.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Literal, TypeAlias

if TYPE_CHECKING:
    from pathlib import Path

    from pydantic import Field

    from deskbot.settings.fields import hostport, matching

    # What the annotations below name; at run time fields.annotated() builds them with
    # their validators, the first time a file is validated.
    SipUri: TypeAlias = str
    Host: TypeAlias = str
    HttpUrl: TypeAlias = str
    SlackApiUrl: TypeAlias = str
    SlackUserId: TypeAlias = str
    SlackChannelId: TypeAlias = str
    MatrixUserId: TypeAlias = str
    MatrixRoomId: TypeAlias = str
    EnvName: TypeAlias = str
    DigestUsername: TypeAlias = str
    SiteName: TypeAlias = str
    NatsUrl: TypeAlias = str
    LdapUrl: TypeAlias = str
    PostgresUrl: TypeAlias = str
    AlertTemplate: TypeAlias = str
    PhoneUriTemplate: TypeAlias = str
    PasswordHash: TypeAlias = str
    Duration: TypeAlias = str

EXTENSION_RE = re.compile(r"[0-9]{1,15}")  # whole keys only: fullmatch
NAME_RE = re.compile(r"[a-z][a-z0-9_.-]{0,63}")


# "message": SIP MESSAGE, text/plain; "snom-infobox", "snom-xml", "yealink-xml": SIP NOTIFY
# with that maker's XML; "poly-push", "cisco-xml": HTTP push ([push], and [desk] for Cisco)
Format = Literal["message", "snom-infobox", "snom-xml", "yealink-xml", "poly-push", "cisco-xml"]


# Every table is a frozen, keyword-only dataclass; pydantic reads __pydantic_config__
# (unknown keys are errors, no type coercion: "5" is not a number, 1 is not true).
_STRICT = {"extra": "forbid", "strict": True}


@dataclass(frozen=True, kw_only=True)
class Registrar:
    __pydantic_config__ = _STRICT
    uri: SipUri
    username: DigestUsername
    password_env: EnvName
    proxy: SipUri | None = None
    domain: Host | None = None


@dataclass(frozen=True, kw_only=True)
class Sip:
    __pydantic_config__ = _STRICT
    listen: Annotated[str, hostport(5060)] = "0.0.0.0:5070"  # SIP's own port when left out
    transport: Literal["udp", "tcp"] = "udp"
    from_uri: SipUri = "sip:deskbot@127.0.0.1"
    display_name: Annotated[
        str,
        matching(r"[A-Za-z0-9 ._-]{1,40}", "use 1-40 letters, digits, spaces, '.', '_' or '-'"),
    ] = "Deskbot"
    timeout: Annotated[float, Field(gt=0, le=32)] = 6.0
    # pjsip's select() loop handles about 64 sockets; more TCP peers abort it.
    max_in_flight: Annotated[int, Field(ge=1, le=200)] = 50
    registrar: Registrar | None = None


@dataclass(frozen=True, kw_only=True)
class Message:
    __pydantic_config__ = _STRICT
    max_chars: Annotated[int, Field(ge=1, le=1000)] = 160
    sender_prefix: bool = True
    # seconds; a command older than this when deskbot picks it up is answered, not sent (0: off)
    max_age: Annotated[int, Field(ge=0, le=7 * 86400)] = 300
    # how phones get text unless [phones.EXT] format says otherwise
    format: Format = "message"
    timezone: str | None = None  # IANA name for `at 14:55`; None: the host's
    # seconds a confirmation request waits before naming who did not confirm
    confirm_within: Annotated[int, Field(ge=10, le=7 * 86400)] = 600


@dataclass(frozen=True, kw_only=True)
class Access:
    __pydantic_config__ = _STRICT
    senders: Literal["*"] | list[str] = "*"
    admins: list[str] = field(default_factory=list)


@dataclass(frozen=True, kw_only=True)
class Limits:
    __pydantic_config__ = _STRICT
    per_sender_per_minute: Annotated[int, Field(ge=1)] = 20
    per_phone_per_minute: Annotated[int, Field(ge=1)] = 10
    max_group_size: Annotated[int, Field(ge=1)] = 50


@dataclass(frozen=True, kw_only=True)
class Audit:
    __pydantic_config__ = _STRICT
    path: str = "./data/deskbot.sqlite3"  # SQLite: one box
    url: PostgresUrl | Literal[""] = ""  # PostgreSQL instead of path: shared by replicas
    password_env: EnvName | None = None  # the PostgreSQL login's password
    # seconds a replica's hold on the commands it is sending lasts without renewal
    lease: Annotated[float, Field(ge=1, le=600)] = 10.0


@dataclass(frozen=True, kw_only=True)
class Health:
    __pydantic_config__ = _STRICT
    listen: Annotated[str, hostport(9120)] = "127.0.0.1:9120"
    # seconds between SIP OPTIONS to every phone (deskbot_phone_up in /metrics); 0 = off
    probe_every: Annotated[float, Field(ge=0, le=86400)] = 0
    # POST /-/reload: without it only from loopback; with it every request needs the token
    reload_token_env: EnvName | None = None


@dataclass(frozen=True, kw_only=True)
class Phone:
    __pydantic_config__ = _STRICT
    uri: SipUri
    label: str = ""
    format: Format | None = None  # None: [message] format
    site: SiteName | Literal[""] = ""  # "" = sent by this deskbot's own SIP agent
    http: HttpUrl | None = None  # HTTP formats: the phone's web address; None: http:// + uri's host


@dataclass(frozen=True, kw_only=True)
class Push:
    """``[push]``: the phones' push account for the HTTP formats (poly-push, cisco-xml)."""

    __pydantic_config__ = _STRICT
    username: DigestUsername
    password_env: EnvName
    ca_file: str | None = None  # PEM of the CA that signed https:// phones' certificates
    timeout: Annotated[float, Field(gt=0, le=32)] | None = None  # None: [sip] timeout
    max_in_flight: Annotated[int, Field(ge=1, le=1000)] = 50  # concurrent pushes


@dataclass(frozen=True, kw_only=True)
class Desk:
    """``[desk]``: deskbot's HTTP endpoint for phones (Cisco screens, confirm keys)."""

    __pydantic_config__ = _STRICT
    listen: Annotated[str, hostport(9122)] = "0.0.0.0:9122"
    url: HttpUrl | None = None  # the address phones use to reach it; cisco-xml needs it
    expire: Annotated[float, Field(ge=5, le=86400)] = 600  # seconds a pushed screen is served


@dataclass(frozen=True, kw_only=True)
class Nats:
    __pydantic_config__ = _STRICT
    url: NatsUrl
    credentials_env: EnvName | None = None  # a .creds file's path, or its content
    user: DigestUsername | None = None
    password_env: EnvName | None = None
    token_env: EnvName | None = None
    # the secret whose MAC every job and answer carries (an edge: its site's key)
    key_env: EnvName | None = None
    # the front: a key of its own per site (site -> variable); other sites use key_env
    site_keys_env: dict[SiteName, EnvName] = field(default_factory=dict)
    # seconds a site's edge has to take a delivery; later it is not sent, ever
    take_within: Annotated[float, Field(gt=0, le=60)] = 5.0


@dataclass(frozen=True, kw_only=True)
class Edge:
    __pydantic_config__ = _STRICT
    site: SiteName


@dataclass(frozen=True, kw_only=True)
class Person:
    __pydantic_config__ = _STRICT
    phone: str | None = None
    slack: SlackUserId | None = None
    matrix: MatrixUserId | None = None
    name: str | None = None  # shown on the phone; defaults to the key


@dataclass(frozen=True, kw_only=True)
class Group:
    __pydantic_config__ = _STRICT
    members: list[str]
    label: str = ""


@dataclass(frozen=True, kw_only=True)
class MatrixSettings:
    __pydantic_config__ = _STRICT
    homeserver: HttpUrl
    user_id: MatrixUserId
    access_token_env: EnvName = "DESKBOT_MATRIX_TOKEN"
    device_id: str = "DESKBOT"
    command: Annotated[
        str, matching(r"\S{1,32}", "must be one word without spaces, like !deskphone")
    ] = "!deskphone"
    rooms: list[MatrixRoomId] = field(default_factory=list)
    store: str = "./data/matrix"


@dataclass(frozen=True, kw_only=True)
class SlackSettings:
    __pydantic_config__ = _STRICT
    mode: Literal["socket", "http"] = "socket"
    command: Annotated[
        str, matching(r"/[a-z0-9_-]{1,31}", "must be a slash command like /deskphone")
    ] = "/deskphone"
    bot_token_env: EnvName = "SLACK_BOT_TOKEN"
    app_token_env: EnvName = "SLACK_APP_TOKEN"
    signing_secret_env: EnvName = "SLACK_SIGNING_SECRET"
    http_listen: Annotated[str, hostport(3000)] = "127.0.0.1:3000"
    api_url: SlackApiUrl = "https://slack.com/api/"
    channels: list[SlackChannelId] = field(default_factory=list)


MIN_TOKEN_CHARS = 16
MIN_KEY_CHARS = 32  # a site key signs jobs that ring phones: 128 bits of hex at least


@dataclass(frozen=True, kw_only=True)
class ApiClient:
    __pydantic_config__ = _STRICT
    token_env: EnvName  # Authorization: Bearer TOKEN
    targets: list[str] | None = None  # what this client may reach; None: any target
    name: Annotated[str, Field(min_length=1, max_length=40)] | None = None  # shown on phones
    alertmanager: HttpUrl | None = None  # where this client's alerts come from (API v2)
    silence_on_confirm: Duration | None = None  # "2h": a confirmed alert is silenced that long

    @property
    def silence_seconds(self) -> float:
        """``silence_on_confirm`` in seconds; 0: a confirmation silences nothing."""
        if not self.alertmanager or not self.silence_on_confirm:
            return 0.0
        unit = {"s": 1, "m": 60, "h": 3600, "d": 86400}[self.silence_on_confirm[-1]]
        return float(self.silence_on_confirm[:-1]) * unit


@dataclass(frozen=True, kw_only=True)
class Api:
    __pydantic_config__ = _STRICT
    listen: Annotated[str, hostport(9121)] = "127.0.0.1:9121"
    clients: dict[str, ApiClient] = field(default_factory=dict)
    # seconds a repeated alert notification is not sent again (shorter than repeat_interval)
    dedup_window: Annotated[int, Field(ge=1, le=86400)] = 900
    alert_template: AlertTemplate | None = None


@dataclass(frozen=True, kw_only=True)
class Web:
    """``[web]``: the web console inside ``deskbot run``; ``users`` maps people to hashes."""

    __pydantic_config__ = _STRICT
    listen: Annotated[str, hostport(9123)] = "127.0.0.1:9123"
    users: dict[str, PasswordHash] = field(default_factory=dict)  # `deskbot hash-password`
    idle: Annotated[int, Field(ge=60, le=86400)] = 1800  # seconds without a request: signed out
    lifetime: Annotated[int, Field(ge=300, le=7 * 86400)] = 43200  # seconds a sign-in lasts
    secure_cookie: bool = False  # true when a TLS proxy fronts the console: cookies only on https
    ldap: bool = (
        False  # people not in users sign in with their directory password ([directory.ldap])
    )


@dataclass(frozen=True, kw_only=True)
class Ldap:
    """``[directory.ldap]``: people, extensions and groups from LDAP / Active Directory."""

    __pydantic_config__ = _STRICT
    url: LdapUrl
    bind_dn: Annotated[str, Field(min_length=1)]
    password_env: EnvName
    base: Annotated[str, Field(min_length=1)]
    phone_uri: PhoneUriTemplate
    refresh: Annotated[float, Field(ge=1, le=86400)] = 300  # seconds between syncs
    preset: Literal["openldap", "ad"] = "openldap"  # the defaults of the keys below
    start_tls: bool = False  # ldap:// upgraded with StartTLS
    ca_file: str | None = None  # PEM of the CA that signed the server's certificate
    timeout: Annotated[float, Field(gt=0, le=120)] = 10.0  # seconds per connect and answer
    people_filter: str | None = None
    groups_filter: str | None = None
    name_attribute: str | None = None  # -> the person's name in commands (lower-cased)
    display_attribute: str | None = None  # -> shown on phones and in `who`
    extension_attribute: str | None = None
    extension_digits: Annotated[int, Field(ge=1, le=15)] | None = None  # keep the last N digits
    group_name_attribute: str | None = None
    member_attribute: str | None = None
    slack_attribute: str | None = None
    matrix_attribute: str | None = None


@dataclass(frozen=True, kw_only=True)
class DirectorySources:
    __pydantic_config__ = _STRICT
    ldap: Ldap | None = None


@dataclass(frozen=True, kw_only=True)
class Template:
    __pydantic_config__ = _STRICT
    text: Annotated[str, Field(min_length=1)]
    targets: str | None = None  # used when the command names none
    confirm: bool = False  # ask each phone for a confirmation (a key labelled OK)
    escalate_to: str | None = None  # told who did not confirm within confirm_within


@dataclass(frozen=True, kw_only=True)
class Schedule:
    __pydantic_config__ = _STRICT
    cron: str
    timezone: str | None = None  # None: [message] timezone, else the host's
    targets: str | None = None  # None: the template's
    text: str | None = None
    template: str | None = None
    vars: dict[str, str] = field(default_factory=dict)
    report_to: str | None = None  # "matrix:!room:server", "slack:C0123", "console"
    confirm: bool = False  # ask each phone for a confirmation (as a template's)
    escalate_to: str | None = None  # told who did not confirm within confirm_within


@dataclass(frozen=True, kw_only=True)
class Settings:
    __pydantic_config__ = _STRICT
    directory: DirectorySources = DirectorySources()
    sip: Sip = Sip()
    message: Message = Message()
    access: Access = Access()
    limits: Limits = Limits()
    audit: Audit = Audit()
    health: Health = Health()
    phones: dict[str, Phone] = field(default_factory=dict)
    people: dict[str, Person] = field(default_factory=dict)
    groups: dict[str, Group] = field(default_factory=dict)
    matrix: MatrixSettings | None = None
    slack: SlackSettings | None = None
    api: Api | None = None
    push: Push | None = None
    desk: Desk | None = None
    web: Web | None = None
    nats: Nats | None = None
    edge: Edge | None = None
    templates: dict[str, Template] = field(default_factory=dict)
    schedules: dict[str, Schedule] = field(default_factory=dict)


class Config:
    """Validated settings plus where they came from and the secrets they name."""

    def __init__(self, settings: Settings, path: Path, secrets: Mapping[str, str]):
        self.settings = settings
        self.path = path
        self._secrets = dict(secrets)

    def secret(self, env_name: str) -> str:
        return self._secrets[env_name]


def counts(s: Settings) -> str:
    """'1 phone, 2 people, 1 group': the size of the directory, for summaries."""

    def count(n: int, one: str, many: str) -> str:
        return f"{n} {one if n == 1 else many}"

    return ", ".join(
        [
            count(len(s.phones), "phone", "phones"),
            count(len(s.people), "person", "people"),
            count(len(s.groups), "group", "groups"),
        ]
    )
