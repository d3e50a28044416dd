"""Reading the config file for a command, and `deskbot check-config`."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, TextIO

from deskbot.cli.exits import EXIT_NOTHING_SENT, EXIT_OK

if TYPE_CHECKING:
    from deskbot.settings.schema import Config


def load(
    path_arg: str | None,
    report_to: TextIO = sys.stderr,
    secrets_for: tuple[str, ...] | None = None,
    cached: bool = False,
) -> Config | None:
    from deskbot.settings.load import ALL_SECRETS, ConfigError, find_path
    from deskbot.settings.load import load as load_file

    path = find_path(path_arg)
    secrets_for = ALL_SECRETS if secrets_for is None else secrets_for
    try:
        return load_file(path, secrets_for=secrets_for, cached=cached)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=report_to)
        return None


def check_config(args: argparse.Namespace) -> int:
    from deskbot.settings.schema import counts

    cfg = load(args.config, report_to=sys.stdout)  # the problems are this command's report
    if cfg is None:
        return EXIT_NOTHING_SENT
    s = cfg.settings
    ldap = ""
    if s.directory.ldap is not None:
        from deskbot.directory.sync import check_config as check_ldap

        problems, ldap = check_ldap(cfg)
        if problems:
            print("\n".join(problems))
            return EXIT_NOTHING_SENT
    store = ""
    if s.audit.url:  # a database on the network: can deskbot reach it and write there now?
        from deskbot.store.base import AuditError
        from deskbot.store.connect import audit_password, open_log

        try:
            open_log(s.audit, audit_password(cfg)).close()
        except AuditError as exc:
            print(f"{cfg.path}: audit.url: {exc}")
            return EXIT_NOTHING_SENT
        store = "; audit log on PostgreSQL"
    adapters = [name for name in ("slack", "matrix") if getattr(s, name)] or ["none"]
    print(
        f"{cfg.path}: ok: {counts(s)}{ldap}; SIP {s.sip.transport} {s.sip.listen}"
        f"{' via ' + s.sip.registrar.uri if s.sip.registrar else ''}; "
        f"chat: {', '.join(adapters)}{store}"
    )
    return EXIT_OK
