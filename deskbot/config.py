"""TOML file -> typed, fully validated settings.

Every problem is reported as ``PATH: key.path: what is wrong`` so a person can
go straight to the line. Validation is complete before anything starts.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from deskbot import sipuri

EXTENSION_RE = re.compile(r"^[0-9]{1,15}$")
NAME_RE = re.compile(r"^[a-z][a-z0-9_.-]{0,63}$")


def _matching(regex: str, message: str) -> AfterValidator:
    """A validator for strings that must match ``regex``; ``message`` may name {value!r}."""
    pattern = re.compile(regex)

    def check(value: str) -> str:
        if not pattern.fullmatch(value):
            raise ValueError(message.format(value=value))
        return value

    return AfterValidator(check)


def _hostport(value: str) -> str:
    sipuri.split_hostport(value)  # its ValueError says what is wrong
    return value


def _sip_uri(value: str) -> str:
    if not sipuri.is_valid(value):
        raise ValueError(f"{value!r} is not a valid sip: URI (like sip:486@10.0.0.86)")
    return value


def _host(value: str) -> str:
    if not sipuri.is_host(value):
        raise ValueError(f"{value!r} is not a host name or IP address")
    return value


HostPort = Annotated[str, AfterValidator(_hostport)]
SipUri = Annotated[str, AfterValidator(_sip_uri)]
Host = Annotated[str, AfterValidator(_host)]
HttpUrl = Annotated[str, _matching(r"https?://[^\s/]+(/.*)?", "{value!r} is not an http(s) URL")]
SlackUserId = Annotated[
    str, _matching(r"[UW][A-Z0-9]{2,20}", "{value!r} is not a Slack user id (like U024BE7LH)")
]
SlackChannelId = Annotated[
    str, _matching(r"[CDG][A-Z0-9]{2,20}", "{value!r} is not a Slack channel id (like C0123ABCD)")
]
MatrixUserId = Annotated[
    str,
    _matching(
        r"@[a-z0-9._=/+-]+:[A-Za-z0-9.-]+(:[0-9]{1,5})?",
        "{value!r} is not a Matrix user id (like @alice:example.com)",
    ),
]
MatrixRoomId = Annotated[
    str,
    _matching(
        r"![A-Za-z0-9._~=+/-]+(:[A-Za-z0-9.-]+(:[0-9]{1,5})?)?",
        "{value!r} is not a Matrix room id (like !abc:example.com)",
    ),
]


# "message": SIP MESSAGE, text/plain; "snom-infobox": SIP NOTIFY, Snom Infobox XML
Format = Literal["message", "snom-infobox"]


class ConfigError(Exception):
    """Raised with every problem found; each line is 'PATH: key.path: message'."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


# The user name goes into the Authorization header as a quoted string: no CR/LF,
# control characters, quotes, backslashes or spaces can bend that header.
DigestUsername = Annotated[
    str,
    _matching(
        r"[!#-\[\]-~]{1,64}",
        "{value!r} cannot go into the Authorization header: use 1-64 printable ASCII "
        "characters without spaces, quotes or backslashes",
    ),
]


class Registrar(_Model):
    uri: SipUri
    username: DigestUsername
    password_env: str
    proxy: SipUri | None = None
    domain: Host | None = None


class Sip(_Model):
    listen: HostPort = "0.0.0.0:5070"
    transport: Literal["udp", "tcp"] = "udp"
    from_uri: SipUri = "sip:deskbot@127.0.0.1"
    display_name: Annotated[
        str,
        _matching(r"[A-Za-z0-9 ._-]{1,40}", "use 1-40 letters, digits, spaces, '.', '_' or '-'"),
    ] = "Deskbot"
    timeout: Annotated[float, Field(gt=0, le=32)] = 6.0
    # pjsip's select() loop handles about 64 sockets; more TCP peers abort it.
    max_in_flight: Annotated[int, Field(ge=1, le=200)] = 50
    registrar: Registrar | None = None


class Message(_Model):
    max_chars: Annotated[int, Field(ge=1, le=1000)] = 160
    sender_prefix: bool = True
    # seconds; a command older than this when deskbot picks it up is answered, not sent (0: off)
    max_age: Annotated[int, Field(ge=0, le=7 * 86400)] = 300
    # how phones get text unless [phones.EXT] format says otherwise
    format: Format = "message"


class Access(_Model):
    senders: Literal["*"] | list[str] = "*"
    admins: list[str] = []


class Limits(_Model):
    per_sender_per_minute: Annotated[int, Field(ge=1)] = 20
    per_phone_per_minute: Annotated[int, Field(ge=1)] = 10
    max_group_size: Annotated[int, Field(ge=1)] = 50


class Audit(_Model):
    path: str = "./data/deskbot.sqlite3"


class Health(_Model):
    listen: HostPort = "127.0.0.1:9120"
    # seconds between SIP OPTIONS to every phone (deskbot_phone_up in /metrics); 0 = off
    probe_every: Annotated[float, Field(ge=0, le=86400)] = 0


class Phone(_Model):
    uri: SipUri
    label: str = ""
    format: Format | None = None  # None: [message] format


class Person(_Model):
    phone: str | None = None
    slack: SlackUserId | None = None
    matrix: MatrixUserId | None = None
    name: str | None = None  # shown on the phone; defaults to the key


class Group(_Model):
    members: list[str]
    label: str = ""


class MatrixSettings(_Model):
    homeserver: HttpUrl
    user_id: MatrixUserId
    access_token_env: str = "DESKBOT_MATRIX_TOKEN"
    device_id: str = "DESKBOT"
    command: Annotated[
        str, _matching(r"\S{1,32}", "must be one word without spaces, like !deskphone")
    ] = "!deskphone"
    rooms: list[MatrixRoomId] = []
    store: str = "./data/matrix"


class SlackSettings(_Model):
    mode: Literal["socket", "http"] = "socket"
    command: Annotated[
        str, _matching(r"/[a-z0-9_-]{1,31}", "must be a slash command like /deskphone")
    ] = "/deskphone"
    bot_token_env: str = "SLACK_BOT_TOKEN"
    app_token_env: str = "SLACK_APP_TOKEN"
    signing_secret_env: str = "SLACK_SIGNING_SECRET"
    http_listen: HostPort = "127.0.0.1:3000"
    # slack_sdk drops the path of a base URL without the trailing slash
    api_url: Annotated[HttpUrl, AfterValidator(lambda v: v if v.endswith("/") else v + "/")] = (
        "https://slack.com/api/"
    )
    channels: list[SlackChannelId] = []


class Settings(_Model):
    sip: Sip = Sip()
    message: Message = Message()
    access: Access = Access()
    limits: Limits = Limits()
    audit: Audit = Audit()
    health: Health = Health()
    phones: dict[str, Phone] = {}
    people: dict[str, Person] = {}
    groups: dict[str, Group] = {}
    matrix: MatrixSettings | None = None
    slack: SlackSettings | None = None


class Config:
    """Validated settings plus where they came from and the secrets they name."""

    def __init__(self, settings: Settings, path: Path, secrets: Mapping[str, str]):
        self.settings = settings
        self.path = path
        self._secrets = dict(secrets)

    def secret(self, env_name: str) -> str:
        return self._secrets[env_name]


def find_path(cli_path: str | None) -> Path:
    if cli_path:
        return Path(cli_path)
    if os.environ.get("DESKBOT_CONFIG"):
        return Path(os.environ["DESKBOT_CONFIG"])
    return Path("config.toml")


ALL_SECRETS = ("sip", "matrix", "slack")


def load(
    path: Path, environ: Mapping[str, str] | None = None, secrets_for: tuple[str, ...] = ALL_SECRETS
) -> Config:
    """Read, parse and validate; raise ConfigError listing every problem.

    ``secrets_for`` names the tables whose ``_env`` variables must be set:
    ``deskbot send`` needs only the SIP password, not the chat tokens.
    """
    environ = os.environ if environ is None else environ
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(
            [f"{path}: file not found (give -c PATH or set DESKBOT_CONFIG)"]
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"{path}: cannot read: {exc}"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{path}: not valid TOML: {exc}"]) from None
    return parse(raw, path, environ, secrets_for)


def parse(
    raw: dict[str, Any],
    path: Path,
    environ: Mapping[str, str],
    secrets_for: tuple[str, ...] = ALL_SECRETS,
) -> Config:
    try:
        settings = Settings.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError([f"{path}: {_loc(e['loc'])}: {_msg(e)}" for e in exc.errors()]) from None
    problems = [f"{path}: {key}: {msg}" for key, msg in cross_check(settings)]
    secrets: dict[str, str] = {}
    for key, env_name in _secret_names(settings):
        if key.split(".")[0] not in secrets_for:
            continue
        value = environ.get(env_name, "")
        if not value:
            problems.append(f"{path}: {key}: environment variable {env_name} is not set")
        else:
            secrets[env_name] = value
    if problems:
        raise ConfigError(problems)
    return Config(settings, path, secrets)


def _loc(loc: tuple[Any, ...]) -> str:
    """('sip', 'listen') -> 'sip.listen'; list positions as 'matrix.rooms[0]'."""
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif not str(part).startswith(("function-", "literal[", "list[")):
            path += f".{part}" if path else str(part)
    return path or "(top level)"


def _msg(error: Any) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        return "unknown key (check the spelling against config.example.toml)"
    if kind == "missing":
        return "required key is missing"
    msg = str(error["msg"])
    return msg.removeprefix("Value error, ")


def _secret_names(s: Settings) -> list[tuple[str, str]]:
    names: list[tuple[str, str]] = []
    if s.sip.registrar:
        names.append(("sip.registrar.password_env", s.sip.registrar.password_env))
    if s.matrix:
        names.append(("matrix.access_token_env", s.matrix.access_token_env))
    if s.slack:
        names.append(("slack.bot_token_env", s.slack.bot_token_env))
        if s.slack.mode == "socket":
            names.append(("slack.app_token_env", s.slack.app_token_env))
        else:
            names.append(("slack.signing_secret_env", s.slack.signing_secret_env))
    return names


def cross_check(s: Settings) -> list[tuple[str, str]]:
    """References between tables: phones, people and groups must exist; ids unique."""
    problems: list[tuple[str, str]] = []
    for ext, phone in s.phones.items():
        if not EXTENSION_RE.match(ext):
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
        if not NAME_RE.match(name):
            problems.append((f"people.{name}", "names are lower-case letters, digits, . _ -"))
        if person.phone is not None and person.phone not in s.phones:
            problems.append((f"people.{name}.phone", f"phone {person.phone!r} is not in [phones]"))
    for name in s.groups:
        if not NAME_RE.match(name):
            problems.append((f"groups.{name}", "names are lower-case letters, digits, . _ -"))
        if name in s.people:
            problems.append((f"groups.{name}", f"{name!r} is also a person; pick another name"))
    for name, group in s.groups.items():
        for i, member in enumerate(group.members):
            ref = member.removeprefix("@")
            if ref in s.people or ref in s.groups or member in s.phones:
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
            if who not in s.people:
                problems.append((f"access.senders[{i}]", f"{who!r} is not in [people]"))
    for i, who in enumerate(s.access.admins):
        if who not in s.people:
            problems.append((f"access.admins[{i}]", f"{who!r} is not in [people]"))
    if s.sip.transport == "tcp" and s.sip.max_in_flight > 60:
        problems.append(("sip.max_in_flight", "over TCP at most 60 (pjsip handles ~64 sockets)"))
    return problems


def _group_cycles(s: Settings) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    for start in s.groups:
        stack: list[tuple[str, tuple[str, ...]]] = [(start, (start,))]
        while stack:
            name, trail = stack.pop()
            for member in s.groups[name].members:
                ref = member.removeprefix("@")
                if ref not in s.groups or member in s.phones:
                    continue
                if ref == start:
                    cycle = " -> ".join((*trail, ref))
                    problems.append((f"groups.{start}.members", f"group cycle: {cycle}"))
                    stack.clear()
                    break
                if ref not in trail:
                    stack.append((ref, (*trail, ref)))
    return problems
