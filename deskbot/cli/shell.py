"""`deskbot send` and `deskbot probe`: one command as the operator at the shell, like sipsak.

The SIP worker was started by the console script before anything heavy was
imported (``deskbot.senders.sip.early``); it is adopted here, or spawned now,
or, when a running `deskbot run` is expected to take the command
(``deskbot.cli.runhint``), spawned only if it does not.
The command ends without interpreter teardown once its lines are printed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import os
import pwd
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, NoReturn

from deskbot.cli import runhint
from deskbot.cli.check import load
from deskbot.cli.exits import EXIT_NOTHING_SENT, exit_code
from deskbot.senders.sip import early
from deskbot.senders.sip.spawn import spawn_worker
from deskbot.settings import paths

# The rest is imported where it is used: the SIP worker starts first, so its
# start-up overlaps the import of the relay.
if TYPE_CHECKING:
    from deskbot.relay.relay import Relay, report
    from deskbot.relay.values import Answer, Dispatch
    from deskbot.senders.sip.spawn import WorkerProcess
    from deskbot.settings.schema import Config

log = logging.getLogger("deskbot")


class ShellReplier:
    """The shell's answer: one line per phone on stdout once every phone answered."""

    waiting_after = None

    def __init__(self, as_json: bool):
        self.as_json = as_json

    async def answer(self, answer: Answer) -> None:
        if answer.error:
            print(f"deskbot: {answer.text}", file=sys.stderr)
        else:  # what was asked for (`history`, `scheduled`, `who 486`): stdout, like a report
            from deskbot.relay.report import terminal

            print("".join(f"{terminal(line)}\n" for line in answer.text.splitlines()), end="")

    async def waiting(self, job: Dispatch) -> None:
        pass

    async def report(self, result: report.Report) -> None:
        from deskbot.relay.report import shell_lines

        if result.lines:  # one write: 10,000 phones are 10,000 lines (print: no stdout, no-op)
            print(shell_lines(result, self.as_json), end="")


async def run(args: argparse.Namespace, command: str) -> int:
    """`send` or `probe`: the worker starts at once; it is killed if nothing is sent."""
    worker: WorkerProcess | None = await early.adopt()
    if worker is None and not runhint.expected:  # else the run will most likely take it
        worker = await spawn_worker()
    # chat tokens are not needed here; the LDAP, NATS, push and database secrets are
    secrets = ("sip", "directory", "nats", "push", "audit")
    cfg = load(args.config, secrets_for=secrets, cached=True)
    if cfg is None:
        if worker is not None:
            worker.kill()
            await worker.wait()
        return EXIT_NOTHING_SENT
    from deskbot.cli.handoff import hand_off

    config = paths.config_path(args.config)
    handed = await hand_off(cfg, config, command, args.json, _login_name())
    if handed is not None:  # a `deskbot run` took it: no worker of our own
        if worker is not None:
            worker.kill()
        exit_now(handed)
    if worker is None:  # the hint was wrong (the run ended, other settings): start it now
        worker = await spawn_worker()
        runhint.forget(config)
    exit_now(await _send(cfg, command, args.json, worker, args.targets))  # no loop teardown


async def _send(
    cfg: Config, command: str, as_json: bool, worker: WorkerProcess, targets: str
) -> int:
    """Run one command (`TARGETS TEXT` or `probe TARGETS`) as the operator at the shell."""
    from deskbot.directory import loader
    from deskbot.relay import report
    from deskbot.relay.relay import Relay
    from deskbot.relay.values import SHELL, Answer, ChatUser, Dispatch, Policy, Request
    from deskbot.senders.route import RouteSender
    from deskbot.senders.sip.agent import AgentError, SipAgent
    from deskbot.sipuri import split_hostport
    from deskbot.sources.serve import carry_out
    from deskbot.store.base import AuditError, CommandLog
    from deskbot.store.connect import audit_password, open_log

    s = cfg.settings
    password = cfg.secret(s.sip.registrar.password_env) if s.sip.registrar else None
    agent = SipAgent(s.sip, password, worker=worker)  # close() ends the worker if unused
    directory = loader.from_settings(s)
    opened: CommandLog | None = None
    reads_log = _reads_log(command)
    if s.directory.ldap is not None or reads_log:  # LDAP's cache is in the audit log too
        try:
            opened = open_log(s.audit, audit_password(cfg))
        except AuditError as exc:
            print(f"deskbot: cannot open {exc}{'' if reads_log else '; nothing was sent'}",
                  file=sys.stderr)  # fmt: skip
            await agent.close()
            return EXIT_NOTHING_SENT
    if s.directory.ldap is not None and opened is not None:
        # LDAP's last good result while it is younger than `refresh`, as `deskbot run` has
        # it, unless the targets are not in it; else LDAP now, else that result anyway
        from deskbot.directory.snapshot import TargetError
        from deskbot.directory.sync import LdapSync, merge

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
    relay = Relay(agent, directory, Policy.from_settings(s), opened if reads_log else None)
    replier = ShellReplier(as_json)
    user = ChatUser(SHELL, _login_name())
    prepared = relay.prepare(Request(user, command))
    if isinstance(prepared, Answer):
        await replier.answer(prepared)
        if opened is not None:
            opened.close()
        await agent.close()
        return EXIT_NOTHING_SENT if prepared.error else 0  # `who 486`, `history`: asked, answered
    assert isinstance(prepared, Dispatch)  # the shell's requests have no key to replay
    audit = opened
    if not prepared.probe:  # a probe shows nothing and is not recorded
        try:
            audit = relay.audit = opened or open_log(s.audit, audit_password(cfg))
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
        from deskbot.senders.sites.sender import EdgeSender

        sites = EdgeSender(s.nats, cfg.secret, s.sip.timeout)
        relay.sender = RouteSender(agent, sites)
        await sites.start()
    pushing = await _http_push(cfg, relay, prepared)
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
        for closing in pushing:
            await closing()
        if audit is not None:
            audit.close()
    return exit_code(result) if isinstance(result, report.Report) else EXIT_NOTHING_SENT


async def _http_push(
    cfg: Config, relay: Relay, job: Dispatch
) -> list[Callable[[], Awaitable[object]]]:
    """Poly and Cisco phones in the job: an HTTP sender beside the SIP one and, for Cisco,
    the ``[desk]`` endpoint for as long as the send lasts. What to close afterwards."""
    from deskbot.directory.snapshot import CISCO_XML, HTTP_FORMATS

    s = cfg.settings
    formats = {p.format for p in job.phones}
    if job.probe or s.push is None or not formats & set(HTTP_FORMATS):
        return []
    from deskbot.senders.formats import FormatSender
    from deskbot.senders.http.board import Board
    from deskbot.senders.http.sender import HttpSender

    closing: list[Callable[[], Awaitable[object]]] = []
    board = None
    if CISCO_XML in formats and s.desk is not None and s.desk.url:
        from deskbot.sources.desk import DeskSource

        board = Board(s.desk.url, s.desk.expire)
        desk = DeskSource(s.desk, board)
        try:
            await desk.start()
            closing.append(desk.stop)
        except RuntimeError as exc:  # `deskbot run` has the port, say: its board is not ours
            print(f"deskbot: {exc}; Cisco phones cannot fetch their screens", file=sys.stderr)
            board = None
    http = HttpSender(s.push, cfg.secret(s.push.password_env), timeout=s.sip.timeout, board=board)
    await http.start()
    closing.insert(0, http.close)
    relay.sender = FormatSender(relay.sender, http)
    return closing


def _reads_log(command: str) -> bool:
    """`history`, `scheduled` and `cancel ID` answer from the audit log, as in chat."""
    from deskbot.relay import grammar

    try:
        parsed = grammar.parse(command)
    except grammar.UsageError:
        return False
    return isinstance(parsed, grammar.History | grammar.Scheduled | grammar.Cancel)


def _login_name() -> str:
    """Who is at the shell, for the audit log: $USER, else the password database's name."""
    try:
        return os.environ.get("USER") or pwd.getpwuid(os.getuid()).pw_name
    except KeyError:  # a uid without a passwd entry (containers)
        return f"uid {os.getuid()}"


def targets_problem(targets: str) -> str | None:
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


def exit_now(code: int) -> NoReturn:
    """End a one-shot command without interpreter teardown (20-40 ms, more than a send).

    By now every phone has answered, the audit log is closed and the worker is
    stopped or killed; only our output is left to flush.
    """
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, AttributeError):  # `| head` went away; `>&-`: None
            stream.flush()
    os._exit(code)
