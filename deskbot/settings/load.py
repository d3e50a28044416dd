"""TOML file -> typed, fully validated settings: reading, secrets, the cache.

Every problem is reported as ``PATH: key.path: what is wrong`` so a person can
go straight to the line. Validation is complete before anything starts.

The settings are frozen dataclasses (``schema``); pydantic validates them but is
imported only when a file is validated. ``deskbot send`` and ``deskbot probe``
read a file they validated before from ``cache``, so a one-shot send starts
without pydantic (about half of its start-up otherwise).
"""

from __future__ import annotations

import dataclasses
import json
import os
import stat
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from deskbot.settings import cache, paths, schema
from deskbot.settings.schema import MIN_KEY_CHARS, MIN_TOKEN_CHARS, Config, Settings

MAX_FILE_BYTES = 16 << 20  # a directory of 100,000 phones is about 5 MB
MAX_LINE_CHARS = 300  # one problem, one readable line


class ConfigError(Exception):
    """Raised with every problem found; each line is 'PATH: key.path: message'."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems


def find_path(cli_path: str | None) -> Path:
    return Path(paths.config_path(cli_path))


ALL_SECRETS = ("sip", "matrix", "slack", "api", "directory", "nats", "push", "health", "audit")


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
    name = cache.key(data, path.absolute().parent) if cached else ""
    settings = cache.get(name) if cached else None
    if settings is not None:  # it was valid; only the secrets can be missing now
        secrets, problems = _secrets(settings, path, environ, secrets_for)
        if problems:
            raise ConfigError(problems)
        return Config(settings, path, secrets)
    found = parse(_toml(data, path), path, environ, secrets_for)
    if cached:
        cache.put(name, found.settings)
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

    from deskbot.settings import fields
    from deskbot.settings.checks import cross_check

    if _adapter is None:
        vars(schema).update(fields.annotated())  # what the tables' string annotations name
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
        elif key.startswith(("api.", "health.")) and len(value) < MIN_TOKEN_CHARS:
            problems.append(
                f"{path}: {key}: the token in {env_name} has {len(value)} characters; use at "
                f"least {MIN_TOKEN_CHARS} (for example `openssl rand -hex 32`)"
            )
        elif key.startswith(("nats.key_env", "nats.site_keys_env")) and len(value) < MIN_KEY_CHARS:
            problems.append(
                f"{path}: {key}: the key in {env_name} has {len(value)} characters; use at "
                f"least {MIN_KEY_CHARS} (for example `openssl rand -hex 32`)"
            )
        else:
            secrets[env_name] = value
    problems += _shared_tokens(settings, path, secrets)
    return secrets, problems


def _shared_tokens(s: Settings, path: Path, secrets: Mapping[str, str]) -> list[str]:
    """Two API clients with one token would be one client with two names: refused."""
    if s.api is None:
        return []
    first: dict[str, str] = {}  # token -> the client that has it
    problems = []
    for name, client in s.api.clients.items():
        token = secrets.get(client.token_env)
        if token is None:
            continue
        if token in first:
            problems.append(
                f"{path}: api.clients.{name}.token_env: the same token as "
                f"api.clients.{first[token]}: give each client its own"
            )
        first.setdefault(token, name)
    return problems


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
    if s.audit.url and s.audit.password_env:
        names.append(("audit.password_env", s.audit.password_env))
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
    if s.health.reload_token_env:
        names.append(("health.reload_token_env", s.health.reload_token_env))
    if s.push:
        names.append(("push.password_env", s.push.password_env))
    if s.nats:
        for key in ("credentials_env", "password_env", "token_env", "key_env"):
            if env_name := getattr(s.nats, key):
                names.append((f"nats.{key}", env_name))
        for site, env_name in s.nats.site_keys_env.items():
            names.append((f"nats.site_keys_env.{site}", env_name))
    return names
