"""Open the store the settings name: SQLite at ``[audit] path``, PostgreSQL at ``[audit] url``."""

from __future__ import annotations

import hashlib
import socket
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from deskbot.settings.schema import Audit, Config
    from deskbot.store.base import CommandLog


def replica_id(cfg: Config) -> str:
    """This replica among the others, the same after a restart (so a restarted one answers
    its own commands at once): the host and a digest of what makes replicas on one host
    differ (the config file, the Matrix store, the listening ports)."""
    s = cfg.settings
    what = [str(cfg.path.absolute()), s.health.listen, s.matrix.store if s.matrix else ""]
    if s.api is not None:
        what.append(s.api.listen)
    digest = hashlib.sha256("\0".join(what).encode()).hexdigest()[:8]
    return f"{socket.gethostname()[:40]}:{digest}"


def audit_password(cfg: Config) -> str | None:
    """The PostgreSQL login's password, when ``[audit] password_env`` names one."""
    env_name = cfg.settings.audit.password_env
    return cfg.secret(env_name) if cfg.settings.audit.url and env_name else None


def open_log(audit: Audit, password: str | None, replica: str = "") -> CommandLog:
    """The command log; AuditError (one line naming the store and why) if it cannot be written."""
    if audit.url:
        from deskbot.store.postgres import PostgresLog

        return PostgresLog(audit.url, password, replica, audit.lease)
    from deskbot.store.audit import AuditLog

    return AuditLog(audit.path, replica, audit.lease)


def shown(audit: Audit) -> str:
    """Where the store is, for /healthz and messages: the URL (it has no password) or path."""
    return audit.url or audit.path
