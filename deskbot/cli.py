"""Command line: ``deskbot run | send | probe | check-config | demo | edge``.

Exit codes of ``send`` and ``probe``: 0 every phone answered 2xx, 1 some phone
answered a final non-2xx code, 3 some phone gave no answer (3 wins over 1), 2
nothing was sent (usage, config or unknown target).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import pwd
import signal
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, NoReturn, TextIO

from deskbot import __version__, launch
from deskbot.senders.sip.spawn import spawn_worker

# The rest is imported where it is used: `send` and `probe` start the SIP worker
# first, so its start-up overlaps the import of pydantic and the relay.
if TYPE_CHECKING:
    from deskbot import config, report
    from deskbot.relay import Answer, Dispatch
    from deskbot.senders.sip.spawn import WorkerProcess

EXIT_OK, EXIT_REFUSED, EXIT_NOTHING_SENT, EXIT_NO_ANSWER = 0, 1, 2, 3
log = logging.getLogger("deskbot")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="deskbot", description="Chat commands to desk phones over SIP."
    )
    parser.add_argument("--version", action="version", version=f"deskbot {__version__}")
    config_help = "config file (default: $DESKBOT_CONFIG, else ./config.toml)"
    # -c and -v work before the command too (`deskbot -c x.toml send ...`)
    parser.add_argument("-c", "--config", metavar="PATH", help=config_help)
    parser.add_argument("-v", "--verbose", action="count", default=0)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "-c", "--config", metavar="PATH", help=config_help, default=argparse.SUPPRESS
        )
        p.add_argument(
            "-v",
            "--verbose",
            action="count",
            default=argparse.SUPPRESS,
            help="more log output (-vv: SIP traces, which include message bodies)",
        )

    p = sub.add_parser("run", help="run every configured chat adapter until stopped")
    common(p)
    p = sub.add_parser("send", help="send TEXT to TARGETS from the shell")
    common(p)
    p.add_argument("--json", action="store_true", help="one JSON object per phone and line")
    p.add_argument("targets", metavar="TARGETS", help="486, alice, @sales or 486,alice,@sales")
    p.add_argument("text", metavar="TEXT", nargs="+", help="the text the phone shows")
    p = sub.add_parser(
        "probe", help="ask TARGETS whether they answer (SIP OPTIONS; nothing is shown)"
    )
    common(p)
    p.add_argument("--json", action="store_true", help="one JSON object per phone and line")
    p.add_argument("targets", metavar="TARGETS", help="486, alice, @sales or 486,alice,@sales")
    p = sub.add_parser("edge", help="send one site's deliveries ([edge] site) taken from [nats]")
    common(p)
    p = sub.add_parser("check-config", help="validate the config file")
    common(p)
    p = sub.add_parser("demo", help="console chat and simulated desk phones, no accounts needed")
    p.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS)
    p.add_argument("--as", dest="as_user", default="alice", help="who you are in the demo chat")
    return parser


def _setup_logging(verbose: int, default: int) -> None:
    level = {0: default, 1: logging.INFO, 2: logging.DEBUG}.get(verbose, logging.DEBUG)
    env = os.environ.get("DESKBOT_LOG_LEVEL", "").upper()
    if env in ("DEBUG", "INFO", "WARNING", "ERROR"):
        level = getattr(logging, env)
    logging.basicConfig(
        level=level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    for chatty in ("watchfiles", "nio"):  # a line per file event / per Matrix event at INFO
        logging.getLogger(chatty).setLevel(max(level, logging.WARNING))
    if verbose < 2 and env != "DEBUG":  # pjsip at debug level logs message bodies
        logging.getLogger("deskbot.sip.pjsip").setLevel(max(level, logging.INFO))


def _load(
    path_arg: str | None,
    report_to: TextIO = sys.stderr,
    secrets_for: tuple[str, ...] | None = None,
    cached: bool = False,
) -> config.Config | None:
    from deskbot import config

    path = config.find_path(path_arg)
    secrets_for = config.ALL_SECRETS if secrets_for is None else secrets_for
    try:
        return config.load(path, secrets_for=secrets_for, cached=cached)
    except config.ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=report_to)
        return None


def check_config(args: argparse.Namespace) -> int:
    from deskbot import config

    cfg = _load(args.config, report_to=sys.stdout)  # the problems are this command's report
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
    adapters = [name for name in ("slack", "matrix") if getattr(s, name)] or ["none"]
    print(
        f"{cfg.path}: ok: {config.counts(s)}{ldap}; SIP {s.sip.transport} {s.sip.listen}"
        f"{' via ' + s.sip.registrar.uri if s.sip.registrar else ''}; "
        f"chat: {', '.join(adapters)}"
    )
    return EXIT_OK


class ShellReplier:
    """The shell's answer: one line per phone on stdout once every phone answered."""

    waiting_after = None

    def __init__(self, as_json: bool):
        self.as_json = as_json

    async def answer(self, answer: Answer) -> None:
        print(f"deskbot: {answer.text}", file=sys.stderr)

    async def waiting(self, job: Dispatch) -> None:
        pass

    async def report(self, result: report.Report) -> None:
        if result.lines:  # one write: 10,000 phones are 10,000 lines (print: no stdout, no-op)
            print("".join(f"{_shell_line(ln, self.as_json)}\n" for ln in result.lines), end="")


async def _shell(args: argparse.Namespace, command: str) -> int:
    """`send` or `probe`: the worker starts at once; it is killed if nothing is sent."""
    worker = await launch.adopt() or await spawn_worker()
    # chat tokens are not needed here; the LDAP and NATS secrets are
    cfg = _load(args.config, secrets_for=("sip", "directory", "nats"), cached=True)
    if cfg is None:
        worker.kill()
        await worker.wait()
        return EXIT_NOTHING_SENT
    _exit_now(await _send(cfg, command, args.json, worker, args.targets))  # no loop teardown


async def _send(
    cfg: config.Config, command: str, as_json: bool, worker: WorkerProcess, targets: str
) -> int:
    """Run one command (`TARGETS TEXT` or `probe TARGETS`) as the operator at the shell."""
    from deskbot import report
    from deskbot.directory import loader
    from deskbot.relay import SHELL, Answer, ChatUser, Dispatch, Policy, Relay, Request
    from deskbot.senders.route import RouteSender
    from deskbot.senders.sip.agent import AgentError, SipAgent
    from deskbot.sipuri import split_hostport
    from deskbot.sources import carry_out
    from deskbot.store import AuditError, AuditLog

    s = cfg.settings
    password = cfg.secret(s.sip.registrar.password_env) if s.sip.registrar else None
    agent = SipAgent(s.sip, password, worker=worker)  # close() ends the worker if unused
    directory = loader.from_settings(s)
    opened: AuditLog | None = None
    if s.directory.ldap is not None:
        # LDAP's last good result while it is younger than `refresh`, as `deskbot run` has
        # it, unless the targets are not in it; else LDAP now, else that result anyway
        from deskbot.directory import TargetError
        from deskbot.directory.sync import LdapSync, merge

        try:
            opened = AuditLog(s.audit.path)
        except AuditError as exc:
            print(f"deskbot: cannot open {exc}; nothing was sent", file=sys.stderr)
            await agent.close()
            return EXIT_NOTHING_SENT
        ldap = LdapSync(opened)
        merged = merge(directory, ldap.current)[0]
        fresh = ldap.since is not None and time.time() - ldap.since < s.directory.ldap.refresh
        if fresh:
            try:
                merged.resolve(targets)
            except TargetError:
                fresh = False  # somebody new in LDAP, perhaps: ask it
        if not fresh:
            outcome = await ldap.sync(s.directory.ldap, cfg.secret(s.directory.ldap.password_env))
            if not outcome.applied:
                print(f"deskbot: {outcome.message}", file=sys.stderr)
            merged = merge(directory, ldap.current)[0]
        directory = merged
    relay = Relay(agent, directory, Policy.from_settings(s))
    replier = ShellReplier(as_json)
    user = ChatUser(SHELL, _login_name())
    prepared = relay.prepare(Request(user, command))
    if isinstance(prepared, Answer):
        await replier.answer(prepared)
        if opened is not None:
            opened.close()
        await agent.close()
        return EXIT_NOTHING_SENT
    assert isinstance(prepared, Dispatch)  # the shell's requests have no key to replay
    audit = opened
    if not prepared.probe:  # a probe shows nothing and is not recorded
        try:
            audit = relay.audit = opened or AuditLog(s.audit.path)
        except AuditError as exc:
            print(f"deskbot: cannot open {exc}; nothing was sent", file=sys.stderr)
            await agent.close()
            return EXIT_NOTHING_SENT
    try:
        await agent.start()
    except AgentError as exc:
        host, port = split_hostport(s.sip.listen)
        if "in use" not in str(exc) or not port:
            print(f"deskbot: cannot start the SIP agent on {s.sip.listen}: {exc}", file=sys.stderr)
            return EXIT_NOTHING_SENT
        # `deskbot run` has the port: a one-shot send goes out from any free one, like sipsak
        log.info("SIP port %d is in use (deskbot run?): sending from a free port", port)
        agent = SipAgent(dataclasses.replace(s.sip, listen=f"{host}:0"), password)
        relay.sender = agent
        try:
            await agent.start()
        except AgentError as again:
            print(f"deskbot: cannot start the SIP agent: {again}", file=sys.stderr)
            return EXIT_NOTHING_SENT
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, agent.abandon)
    sites = None
    if s.nats is not None and any(p.site for p in prepared.phones):
        from deskbot.senders.edge import EdgeSender

        sites = EdgeSender(s.nats, cfg.secret, s.sip.timeout)
        relay.sender = RouteSender(agent, sites)
        await sites.start()
    try:
        if s.sip.registrar:
            await agent.wait_registration(timeout=5.0)  # send with a known registration
        if sites is not None:
            await sites.wait_connected(timeout=5.0)
        result = await carry_out(relay, prepared, replier)
    finally:
        await agent.close(orderly=s.sip.registrar is not None)  # unREGISTER before leaving
        if sites is not None:
            await sites.close()
        if audit is not None:
            audit.close()
    return exit_code(result) if isinstance(result, report.Report) else EXIT_NOTHING_SENT


def _login_name() -> str:
    """Who is at the shell, for the audit log: $USER, else the password database's name."""
    try:
        return os.environ.get("USER") or pwd.getpwuid(os.getuid()).pw_name
    except KeyError:  # a uid without a passwd entry (containers)
        return f"uid {os.getuid()}"


def _targets_problem(targets: str) -> str | None:
    """TARGETS is one word: `deskbot send "486 487" hi` must not send "487 hi" to 486."""
    if not targets.strip():
        return "TARGETS is empty: give an extension, person or group, like 486 or @sales"
    if any(c.isspace() for c in targets):
        shown = repr(targets) if len(targets) <= 40 else repr(targets[:39] + "…")
        return (
            f"TARGETS is one word, but {shown} has a space in it: separate targets "
            f"with commas, like {','.join(targets.replace(',', ' ').split())}"
        )
    return None


def exit_code(result: report.Report) -> int:
    """0 every phone 2xx; 3 some phone gave no answer; else 1 (3 wins over 1)."""
    from deskbot.senders import Outcome

    outcomes = {ln.delivery.outcome if ln.delivery else Outcome.REFUSED for ln in result.lines}
    if outcomes & {Outcome.NO_ANSWER, Outcome.UNCONFIRMED}:
        return EXIT_NO_ANSWER
    if outcomes - {Outcome.DELIVERED}:
        return EXIT_REFUSED
    return EXIT_OK


def _shell_line(line: report.Line, as_json: bool) -> str:
    from deskbot import report

    phone, d = line.phone, line.delivery
    if as_json:
        return json.dumps(report.delivery_record(line), ensure_ascii=False)
    if d is None:
        return f"{phone.extension}\t{phone.label or '-'}\tnot sent\t{line.skipped}"
    tip = report.hint(d, phone, line.probe)
    text = f"{phone.extension}\t{phone.label or '-'}\t{d.code} {d.reason}\t{d.elapsed_ms:.0f} ms"
    return f"{text}\t{tip}" if tip else text


def _exit_now(code: int) -> NoReturn:
    """End a one-shot command without interpreter teardown (20-40 ms, more than a send).

    By now every phone has answered, the audit log is closed and the worker is
    stopped or killed; only our output is left to flush.
    """
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, AttributeError):  # `| head` went away; `>&-`: None
            stream.flush()
    os._exit(code)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "check-config":
        _setup_logging(args.verbose, logging.WARNING)
        return check_config(args)
    if args.command in ("send", "probe"):
        _setup_logging(args.verbose, logging.WARNING)
        problem = _targets_problem(args.targets)
        if problem:
            print(f"deskbot: {problem}. Nothing was sent.", file=sys.stderr)
            return EXIT_NOTHING_SENT
        if args.command == "send":
            command = f"{args.targets} {' '.join(args.text)}"
        else:
            command = f"probe {args.targets}"
        try:
            code = asyncio.run(_shell(args, command))
        except KeyboardInterrupt:
            code = EXIT_NO_ANSWER
        _exit_now(code)
    if args.command == "run":
        _setup_logging(args.verbose, logging.INFO)
        cfg = _load(args.config)
        if cfg is None:
            return EXIT_NOTHING_SENT
        from deskbot.app import StartError, run

        try:
            run(cfg)
        except StartError as exc:
            log.error("cannot start %s", exc)
            return EXIT_NOTHING_SENT
        return EXIT_OK
    if args.command == "edge":
        _setup_logging(args.verbose, logging.INFO)
        cfg = _load(args.config, secrets_for=("sip", "nats"))
        if cfg is None:
            return EXIT_NOTHING_SENT
        if cfg.settings.edge is None:
            print(f"{cfg.path}: edge: add an [edge] table with this office's site", file=sys.stderr)
            return EXIT_NOTHING_SENT
        from deskbot.edge import EdgeStartError
        from deskbot.edge import run as run_edge

        try:
            run_edge(cfg)
        except EdgeStartError as exc:
            log.error("cannot start %s", exc)
            return EXIT_NOTHING_SENT
        return EXIT_OK
    if args.command == "demo":
        _setup_logging(args.verbose, logging.WARNING)
        from deskbot.demo import main as demo_main
        from deskbot.senders.sip.agent import AgentError

        try:
            demo_main(args.as_user)
        except AgentError as exc:
            print(f"deskbot demo: cannot start the SIP agent: {exc}", file=sys.stderr)
            return EXIT_NOTHING_SENT
        return EXIT_OK
    return EXIT_NOTHING_SENT


if __name__ == "__main__":
    sys.exit(main())
