"""The validators of single fields: what a value of each kind must look like.

pydantic is imported only here and only when a file is validated: the tables in
``schema`` name these validators in string annotations, which ``load`` resolves
with ``annotated()`` the first time it validates a file.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Annotated, Any

from deskbot import sipuri

if TYPE_CHECKING:
    from pydantic import AfterValidator


def matching(regex: str, message: str) -> AfterValidator:
    """A validator for strings that must match ``regex``; ``message`` may name {value!r}."""
    from pydantic import AfterValidator

    pattern = re.compile(regex)

    def check(value: str) -> str:
        if not pattern.fullmatch(value):
            raise ValueError(message.format(value=value))
        return value

    return AfterValidator(check)


def hostport(default_port: int) -> AfterValidator:
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


USERINFO = re.compile(r"[a-z]+://[^/?#]*@")  # scheme://user:password@host


def no_userinfo(value: str) -> str:
    """A URL is logged on every connect: a user or password in it is refused, unechoed."""
    if any(USERINFO.match(part.strip()) for part in value.split(",")):
        raise ValueError(
            "has a user or password in it (user:password@): the URL is logged, so give the "
            "login in the table's user and password_env (or token_env) instead"
        )
    return value


def _str_no_userinfo(value: Any) -> Any:
    return no_userinfo(value) if isinstance(value, str) else value


def _postgres_url(value: str) -> str:
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 (raises on a port that is not a number)
    except ValueError as exc:
        raise ValueError(f"{value!r} is not a postgresql:// URL: {exc}") from None
    if parts.scheme not in ("postgresql", "postgres") or not parts.hostname:
        raise ValueError(f"{value!r} is not a postgresql:// URL with a host")
    if parts.password is not None:
        raise ValueError("the password belongs in [audit] password_env, not in the URL")
    if any(c.isspace() or not c.isprintable() for c in value):
        raise ValueError("a postgresql:// URL has no spaces or control characters")
    return value


def annotated() -> dict[str, Any]:
    """The names the settings' annotations use, with pydantic's validators in them."""
    from pydantic import AfterValidator, BeforeValidator, Field

    def url(regex: str, message: str) -> Any:
        # userinfo first: the format message below names the value
        return Annotated[str, BeforeValidator(_str_no_userinfo), matching(regex, message)]

    http_url = url(r"https?://[^\s/]+(/.*)?", "{value!r} is not an http(s) URL")
    return {
        "AfterValidator": AfterValidator,
        "Field": Field,
        "matching": matching,
        "hostport": hostport,
        "SipUri": Annotated[str, AfterValidator(_sip_uri)],
        "PasswordHash": Annotated[
            str,
            matching(
                r"\$2[aby]\$[0-9]{2}\$[./A-Za-z0-9]{53}",
                "not a bcrypt hash: run `deskbot hash-password` and paste what it prints",
            ),
        ],
        "Host": Annotated[str, AfterValidator(_host)],
        "PostgresUrl": Annotated[str, AfterValidator(_postgres_url)],
        "HttpUrl": http_url,
        # slack_sdk drops the path of a base URL without the trailing slash
        "SlackApiUrl": Annotated[
            http_url, AfterValidator(lambda v: v if v.endswith("/") else v + "/")
        ],
        "SlackUserId": Annotated[
            str,
            matching(r"[UW][A-Z0-9]{2,20}", "{value!r} is not a Slack user id (like U024BE7LH)"),
        ],
        "SlackChannelId": Annotated[
            str,
            matching(
                r"[CDG][A-Z0-9]{2,20}", "{value!r} is not a Slack channel id (like C0123ABCD)"
            ),
        ],
        "MatrixUserId": Annotated[
            str,
            matching(
                r"@[a-z0-9._=/+-]+:[A-Za-z0-9.-]+(:[0-9]{1,5})?",
                "{value!r} is not a Matrix user id (like @alice:example.com)",
            ),
        ],
        "MatrixRoomId": Annotated[
            str,
            matching(
                r"![A-Za-z0-9._~=+/-]+(:[A-Za-z0-9.-]+(:[0-9]{1,5})?)?",
                "{value!r} is not a Matrix room id (like !abc:example.com)",
            ),
        ],
        # The value is never echoed: a secret pasted here by mistake must not reach a log or a DM.
        # Upper case only: a token pasted here (hex, base64, xoxb-...) is refused, not taken
        # as a variable's name and then echoed in "variable ... is not set".
        "EnvName": Annotated[
            str,
            matching(
                r"[A-Z_][A-Z0-9_]{0,63}",
                "must name an environment variable (upper-case letters, digits and _, like "
                "SLACK_BOT_TOKEN) that holds the secret, not the secret itself",
            ),
        ],
        # The user name goes into the Authorization header as a quoted string: no CR/LF,
        # control characters, quotes, backslashes or spaces can bend that header.
        "DigestUsername": Annotated[
            str,
            matching(
                r"[!#-\[\]-~]{1,64}",
                "{value!r} cannot go into the Authorization header: use 1-64 printable ASCII "
                "characters without spaces, quotes or backslashes",
            ),
        ],
        "SiteName": Annotated[
            str,
            matching(
                r"[a-z0-9][a-z0-9_-]{0,31}",
                "{value!r}: a site is 1-32 lower-case letters, digits, _ or -",
            ),
        ],
        "NatsUrl": url(
            r"(nats|tls)://[^\s/?#]+(,(nats|tls)://[^\s/?#]+)*",
            "{value!r} is not a NATS server URL (like nats://hub.example.com:4222 or tls://...)",
        ),
        "LdapUrl": url(r"ldaps?://[^\s/]+/?", "{value!r} is not an ldap:// or ldaps:// URL"),
        "AlertTemplate": Annotated[str, AfterValidator(_alert_template)],
        "Duration": Annotated[
            str,
            matching(
                r"([1-9][0-9]{0,6}s|[1-9][0-9]{0,4}m|[1-9][0-9]{0,3}h|[1-9][0-9]?d)",
                "{value!r} is not a duration: a number and s, m, h or d (like 2h), at most 99d",
            ),
        ],
        "PhoneUriTemplate": Annotated[str, AfterValidator(_phone_uri)],
    }
