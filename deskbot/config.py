"""TOML file -> typed, fully validated settings.

Every problem is reported as ``PATH: key.path: what is wrong`` so a person can
go straight to the line. Validation is complete before anything starts.

The settings are frozen dataclasses; pydantic validates them but is imported
only when a file is validated. ``deskbot send`` and ``deskbot probe`` read a
file they validated before from ``deskbot.settings_cache``, so a one-shot send
starts without pydantic (about half of its start-up otherwise).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import stat
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeAlias

from deskbot import settings_cache, sipuri

if TYPE_CHECKING:
    from pydantic import AfterValidator, Field

    # What the annotations below name; at run time _annotated() builds them with
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
    AlertTemplate: TypeAlias = str
    PhoneUriTemplate: TypeAlias = str

EXTENSION_RE = re.compile(r"[0-9]{1,15}")  # whole keys only: fullmatch
NAME_RE = re.compile(r"[a-z][a-z0-9_.-]{0,63}")
MAX_FILE_BYTES = 16 << 20  # a directory of 100,000 phones is about 5 MB
MAX_LINE_CHARS = 300  # one problem, one readable line


def _matching(regex: str, message: str) -> AfterValidator:
    """A validator for strings that must match ``regex``; ``message`` may name {value!r}."""
    from pydantic import AfterValidator

    pattern = re.compile(regex)

    def check(value: str) -> str:
        if not pattern.fullmatch(value):
            raise ValueError(message.format(value=value))
        return value

    return AfterValidator(check)


def _hostport(default_port: int) -> AfterValidator:
    """host:port; a missing port is ``default_port`` (port 0 stays "any free port")."""
    from pydantic import AfterValidator

    def check(value: str) -> str:
        host, port = sipuri.split_hostport(value)  # its ValueError says what is wrong
        return value if port is not None else f"{host}:{default_port}"

    return AfterValidator(check)


def _sip_uri(value: str) -> str:
    if not sipuri.is_valid(value):
        raise ValueError(f"{value!r} is not a valid sip: URI (like sip:486@10.0.0.86)")
    return value


def _host(value: str) -> str:
    if not sipuri.is_host(value):
        raise ValueError(f"{value!r} is not a host name or IP address")
    return value


def _alert_template(value: str) -> str:
    """Only plain {name} fields: no attribute or index access, no format specs."""
    import string

    try:
        fields = [f for _, f, spec, conv in string.Formatter().parse(value) if f is not None]
        specs = [spec or conv for _, f, spec, conv in string.Formatter().parse(value) if f]
    except ValueError as exc:
        raise ValueError(f"not a valid template: {exc} (write {{{{ and }}}} for braces)") from None
    for name in fields:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise ValueError(f"{{{name}}} is not a field: use names like {{alertname}}")
    if any(specs):
        raise ValueError("fields take no format spec or conversion: write {summary}")
    return value


def _phone_uri(value: str) -> str:
    if "{extension}" not in value:
        raise ValueError("must contain {extension}, like sip:{extension}@pbx.example.com")
    if not sipuri.is_valid(value.replace("{extension}", "486")):
        raise ValueError(f"{value!r} is not a sip: URI with {{extension}} in it")
    return value


def _annotated() -> dict[str, Any]:
    """The names the settings' annotations use, with pydantic's validators in them."""
    from pydantic import AfterValidator, Field

    http_url = Annotated[
        str, _matching(r"https?://[^\s/]+(/.*)?", "{value!r} is not an http(s) URL")
    ]
    return {
        "AfterValidator": AfterValidator,
        "Field": Field,
        "SipUri": Annotated[str, AfterValidator(_sip_uri)],
        "Host": Annotated[str, AfterValidator(_host)],
        "HttpUrl": http_url,
        # slack_sdk drops the path of a base URL without the trailing slash
        "SlackApiUrl": Annotated[
            http_url, AfterValidator(lambda v: v if v.endswith("/") else v + "/")
        ],
        "SlackUserId": Annotated[
            str,
            _matching(r"[UW][A-Z0-9]{2,20}", "{value!r} is not a Slack user id (like U024BE7LH)"),
        ],
        "SlackChannelId": Annotated[
            str,
            _matching(
                r"[CDG][A-Z0-9]{2,20}", "{value!r} is not a Slack channel id (like C0123ABCD)"
            ),
        ],
        "MatrixUserId": Annotated[
            str,
            _matching(
                r"@[a-z0-9._=/+-]+:[A-Za-z0-9.-]+(:[0-9]{1,5})?",
                "{value!r} is not a Matrix user id (like @alice:example.com)",
            ),
        ],
        "MatrixRoomId": Annotated[
            str,
            _matching(
                r"![A-Za-z0-9._~=+/-]+(:[A-Za-z0-9.-]+(:[0-9]{1,5})?)?",
                "{value!r} is not a Matrix room id (like !abc:example.com)",
            ),
        ],
        # The value is never echoed: a secret pasted here by mistake must not reach a log or a DM.
        "EnvName": Annotated[
            str,
            _matching(
                r"[A-Za-z_][A-Za-z0-9_]{0,63}",
                "must name an environment variable (like SLACK_BOT_TOKEN) that holds the "
                "secret, not the secret itself",
            ),
        ],
        # The user name goes into the Authorization header as a quoted string: no CR/LF,
        # control characters, quotes, backslashes or spaces can bend that header.
        "DigestUsername": Annotated[
            str,
            _matching(
                r"[!#-\[\]-~]{1,64}",
                "{value!r} cannot go into the Authorization header: use 1-64 printable ASCII "
                "characters without spaces, quotes or backslashes",
            ),
        ],
        "SiteName": Annotated[
            str,
            _matching(
                r"[a-z0-9][a-z0-9_-]{0,31}",
                "{value!r}: a site is 1-32 lower-case letters, digits, _ or -",
            ),
        ],
        "NatsUrl": Annotated[
            str,
            _matching(
                r"(nats|tls)://[^\s/?#]+(,(nats|tls)://[^\s/?#]+)*",
                "{value!r} is not a NATS server URL (like nats://hub.example.com:4222 or "
                "tls://...)",
            ),
        ],
        "AlertTemplate": Annotated[str, AfterValidator(_alert_template)],
        "PhoneUriTemplate": Annotated[str, AfterValidator(_phone_uri)],
    }


# "message": SIP MESSAGE, text/plain; "snom-infobox": SIP NOTIFY, Snom Infobox XML
Format = Literal["message", "snom-infobox"]


class ConfigError(Exception):
    """Raised with every problem found; each line is 'PATH: key.path: message'."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems


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
    listen: Annotated[str, _hostport(5060)] = "0.0.0.0:5070"  # SIP's own port when left out
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
    path: str = "./data/deskbot.sqlite3"


@dataclass(frozen=True, kw_only=True)
class Health:
    __pydantic_config__ = _STRICT
    listen: Annotated[str, _hostport(9120)] = "127.0.0.1:9120"
    # seconds between SIP OPTIONS to every phone (deskbot_phone_up in /metrics); 0 = off
    probe_every: Annotated[float, Field(ge=0, le=86400)] = 0


@dataclass(frozen=True, kw_only=True)
class Phone:
    __pydantic_config__ = _STRICT
    uri: SipUri
    label: str = ""
    format: Format | None = None  # None: [message] format
    site: SiteName | Literal[""] = ""  # "" = sent by this deskbot's own SIP agent


@dataclass(frozen=True, kw_only=True)
class Nats:
    __pydantic_config__ = _STRICT
    url: NatsUrl
    credentials_env: EnvName | None = None  # a .creds file's path, or its content
    user: DigestUsername | None = None
    password_env: EnvName | None = None
    token_env: EnvName | None = None
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
        str, _matching(r"\S{1,32}", "must be one word without spaces, like !deskphone")
    ] = "!deskphone"
    rooms: list[MatrixRoomId] = field(default_factory=list)
    store: str = "./data/matrix"


@dataclass(frozen=True, kw_only=True)
class SlackSettings:
    __pydantic_config__ = _STRICT
    mode: Literal["socket", "http"] = "socket"
    command: Annotated[
        str, _matching(r"/[a-z0-9_-]{1,31}", "must be a slash command like /deskphone")
    ] = "/deskphone"
    bot_token_env: EnvName = "SLACK_BOT_TOKEN"
    app_token_env: EnvName = "SLACK_APP_TOKEN"
    signing_secret_env: EnvName = "SLACK_SIGNING_SECRET"
    http_listen: Annotated[str, _hostport(3000)] = "127.0.0.1:3000"
    api_url: SlackApiUrl = "https://slack.com/api/"
    channels: list[SlackChannelId] = field(default_factory=list)


MIN_TOKEN_CHARS = 16


@dataclass(frozen=True, kw_only=True)
class ApiClient:
    __pydantic_config__ = _STRICT
    token_env: str  # Authorization: Bearer TOKEN
    targets: list[str] | None = None  # what this client may reach; None: any target
    name: Annotated[str, Field(min_length=1, max_length=40)] | None = None  # shown on phones


@dataclass(frozen=True, kw_only=True)
class Api:
    __pydantic_config__ = _STRICT
    listen: Annotated[str, _hostport(9121)] = "127.0.0.1:9121"
    clients: dict[str, ApiClient] = field(default_factory=dict)
    # seconds a repeated alert notification is not sent again (shorter than repeat_interval)
    dedup_window: Annotated[int, Field(ge=1, le=86400)] = 900
    alert_template: AlertTemplate | None = None


@dataclass(frozen=True, kw_only=True)
class Ldap:
    """``[directory.ldap]``: people, extensions and groups from LDAP / Active Directory."""

    __pydantic_config__ = _STRICT
    url: Annotated[
        str, _matching(r"ldaps?://[^\s/]+/?", "{value!r} is not an ldap:// or ldaps:// URL")
    ]
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


def find_path(cli_path: str | None) -> Path:
    if cli_path:
        return Path(cli_path)
    if os.environ.get("DESKBOT_CONFIG"):
        return Path(os.environ["DESKBOT_CONFIG"])
    return Path("config.toml")


ALL_SECRETS = ("sip", "matrix", "slack", "api", "directory", "nats")


def load(
    path: Path,
    environ: Mapping[str, str] | None = None,
    secrets_for: tuple[str, ...] = ALL_SECRETS,
    cached: bool = False,
) -> Config:
    """Read, parse and validate; raise ConfigError listing every problem.

    ``secrets_for`` names the tables whose ``_env`` variables must be set:
    ``deskbot send`` needs only the SIP password, not the chat tokens. Any
    file gives a Config or a ConfigError, never another exception. With
    ``cached``, a file validated before (same bytes, same folder, same
    deskbot) is not validated again; its secrets are always read anew.
    """
    environ = os.environ if environ is None else environ
    data = _read(path)
    name = settings_cache.key(data, path.absolute().parent) if cached else ""
    settings = settings_cache.get(name) if cached else None
    if settings is not None:  # it was valid; only the secrets can be missing now
        secrets, problems = _secrets(settings, path, environ, secrets_for)
        if problems:
            raise ConfigError(problems)
        return Config(settings, path, secrets)
    found = parse(_toml(data, path), path, environ, secrets_for)
    if cached:
        settings_cache.put(name, found.settings)
    return found


def _toml(data: bytes, path: Path) -> dict[str, Any]:
    import tomllib

    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{path}: not UTF-8 text (byte {exc.start})"]) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([_line(f"{path}: not valid TOML: {exc}")]) from None
    except ValueError as exc:  # an integer over Python's digit limit is not a TOMLDecodeError
        why = str(exc)
        if "integer string conversion" in why:
            why = f"a number has more than {sys.get_int_max_str_digits()} digits"
        raise ConfigError([_line(f"{path}: not valid TOML: {why}")]) from None
    except RecursionError:
        raise ConfigError([f"{path}: not valid TOML: arrays or tables nested too deeply"]) from None


def _read(path: Path) -> bytes:
    """The file's bytes; only a regular file of sane size (a FIFO or /dev/zero must not hang)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise ConfigError(
            [f"{path}: file not found (give -c PATH or set DESKBOT_CONFIG)"]
        ) from None
    except OSError as exc:
        raise ConfigError([_line(f"{path}: cannot read: {exc.strerror or exc}")]) from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise ConfigError([f"{path}: not a regular file"])
    with os.fdopen(fd, "rb") as file:
        try:
            data = file.read(MAX_FILE_BYTES + 1)
        except OSError as exc:
            raise ConfigError([_line(f"{path}: cannot read: {exc.strerror or exc}")]) from None
    if len(data) > MAX_FILE_BYTES:
        raise ConfigError([f"{path}: larger than {MAX_FILE_BYTES >> 20} MB: not a config file"])
    return data


def parse(
    raw: dict[str, Any],
    path: Path,
    environ: Mapping[str, str],
    secrets_for: tuple[str, ...] = ALL_SECRETS,
) -> Config:
    """Validate parsed TOML; relative file paths in it are taken from the file's folder."""
    settings, problems = _validated(raw, path)
    secrets, missing = _secrets(settings, path, environ, secrets_for)
    if problems or missing:
        raise ConfigError(problems + missing)
    return Config(_beside(settings, path.absolute().parent), path, secrets)


def validate(raw: dict[str, Any], path: Path) -> Settings:
    """Parsed TOML -> Settings, or ConfigError; no secrets are read."""
    settings, problems = _validated(raw, path)
    if problems:
        raise ConfigError(problems)
    return _beside(settings, path.absolute().parent)


_adapter: Any = None  # pydantic's TypeAdapter(Settings), built on first use


def _validated(raw: dict[str, Any], path: Path) -> tuple[Settings, list[str]]:
    """Every table checked (else ConfigError), and the problems between tables.

    pydantic validates the JSON form: its strict mode takes a dataclass from a
    JSON object but from a Python dict only as an instance. TOML dates and
    times have no JSON form; they become an object, which no key accepts.
    """
    global _adapter
    from pydantic import TypeAdapter, ValidationError

    if _adapter is None:
        globals().update(_annotated())  # what the string annotations name
        _adapter = TypeAdapter(Settings)
    try:
        document = json.dumps(raw, default=lambda value: {"TOML date or time": str(value)})
        settings: Settings = _adapter.validate_json(document)
    except ValidationError as exc:
        raise ConfigError(
            [_line(f"{path}: {_loc(e['loc'])}: {_msg(e)}") for e in exc.errors()]
        ) from None
    except RecursionError:
        raise ConfigError([f"{path}: values nested too deeply"]) from None
    return settings, [_line(f"{path}: {key}: {msg}") for key, msg in cross_check(settings)]


def _secrets(
    settings: Settings, path: Path, environ: Mapping[str, str], secrets_for: tuple[str, ...]
) -> tuple[dict[str, str], list[str]]:
    """The secrets the tables in ``secrets_for`` name, and a problem for each one missing."""
    problems: list[str] = []
    secrets: dict[str, str] = {}
    for key, env_name in _secret_names(settings):
        if key.split(".")[0] not in secrets_for:
            continue
        value = environ.get(env_name, "")
        if not value:
            problems.append(_line(f"{path}: {key}: environment variable {env_name} is not set"))
        elif key.startswith("api.") and len(value) < MIN_TOKEN_CHARS:
            problems.append(
                f"{path}: {key}: the token in {env_name} has {len(value)} characters; use at "
                f"least {MIN_TOKEN_CHARS} (for example `openssl rand -hex 32`)"
            )
        else:
            secrets[env_name] = value
    return secrets, problems


def _beside(s: Settings, folder: Path) -> Settings:
    """Relative ``[audit] path`` and ``[matrix] store`` -> under the config file's folder."""

    def near(value: str) -> str:
        if not value or value == ":memory:" or Path(value).is_absolute():
            return value
        return str(folder / value)

    update: dict[str, Any] = {"audit": dataclasses.replace(s.audit, path=near(s.audit.path))}
    if s.matrix is not None:
        update["matrix"] = dataclasses.replace(s.matrix, store=near(s.matrix.store))
    return dataclasses.replace(s, **update)


def _line(text: str) -> str:
    """One problem as one printable line: control characters escaped, long values cut."""
    shown = "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)
    return shown if len(shown) <= MAX_LINE_CHARS else shown[: MAX_LINE_CHARS - 1] + "…"


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
    if kind in ("extra_forbidden", "unexpected_keyword_argument"):
        return "unknown key (check the spelling against config.example.toml)"
    if kind == "dataclass_type":
        return "must be a table"
    if kind in ("missing", "missing_argument"):
        return "required key is missing"
    msg = str(error["msg"])
    return msg.removeprefix("Value error, ")


def _secret_names(s: Settings) -> list[tuple[str, str]]:
    names: list[tuple[str, str]] = []
    if s.sip.registrar:
        names.append(("sip.registrar.password_env", s.sip.registrar.password_env))
    if s.directory.ldap:
        names.append(("directory.ldap.password_env", s.directory.ldap.password_env))
    if s.matrix:
        names.append(("matrix.access_token_env", s.matrix.access_token_env))
    if s.slack:
        names.append(("slack.bot_token_env", s.slack.bot_token_env))
        if s.slack.mode == "socket":
            names.append(("slack.app_token_env", s.slack.app_token_env))
        else:
            names.append(("slack.signing_secret_env", s.slack.signing_secret_env))
    if s.api:
        for name, client in s.api.clients.items():
            names.append((f"api.clients.{name}.token_env", client.token_env))
    if s.nats:
        for key in ("credentials_env", "password_env", "token_env"):
            if env_name := getattr(s.nats, key):
                names.append((f"nats.{key}", env_name))
    return names


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
    problems += _nats_problems(s)
    from deskbot import plans  # cron and time zones: only when there is a file to check

    problems += plans.problems(s)
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
        if not NAME_RE.match(name):
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
    if len(ways) > 1:
        problems.append(("nats", f"give one way to log in, not {' and '.join(ways)}"))
    if (s.nats.user is None) != (s.nats.password_env is None):
        problems.append(("nats", "user and password_env go together"))
    return problems


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
