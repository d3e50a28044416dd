"""Command line: ``deskbot run | send | probe | check-config | demo | edge | hash-password``.

Exit codes of ``send`` and ``probe`` (``exits``): 0 every phone answered 2xx,
1 some phone answered a final non-2xx code, 3 some phone gave no answer (3
wins over 1), 2 nothing was sent (usage, config or unknown target).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Sequence

from deskbot import __version__
from deskbot.cli.check import check_config, load
from deskbot.cli.exits import EXIT_NO_ANSWER, EXIT_NOTHING_SENT, EXIT_OK

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
    p.add_argument(
        "text",
        metavar="TEXT",
        nargs="*",
        help="the text the phone shows (`deskbot send history` lists the shell's sends)",
    )
    p = sub.add_parser(
        "probe", help="ask TARGETS whether they answer (SIP OPTIONS; nothing is shown)"
    )
    common(p)
    p.add_argument("--json", action="store_true", help="one JSON object per phone and line")
    p.add_argument("targets", metavar="TARGETS", help="486, alice, @sales or 486,alice,@sales")
    p = sub.add_parser("edge", help="send one site's deliveries ([edge] site) taken from [nats]")
    common(p)
    sub.add_parser("hash-password", help="read a password on stdin, print its hash for [web.users]")
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


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "check-config":
        _setup_logging(args.verbose, logging.WARNING)
        return check_config(args)
    if args.command in ("send", "probe"):
        from deskbot.cli import shell

        _setup_logging(args.verbose, logging.WARNING)
        problem = shell.targets_problem(args.targets)
        if problem:
            print(f"deskbot: {problem}. Nothing was sent.", file=sys.stderr)
            return EXIT_NOTHING_SENT
        if args.command == "send":
            command = " ".join([args.targets, *args.text])
        else:
            command = f"probe {args.targets}"
        try:
            code = asyncio.run(shell.run(args, command))
        except KeyboardInterrupt:
            code = EXIT_NO_ANSWER
        shell.exit_now(code)
    if args.command == "run":
        _setup_logging(args.verbose, logging.INFO)
        cfg = load(args.config)
        if cfg is None:
            return EXIT_NOTHING_SENT
        from deskbot.service.front import StartError, run

        try:
            run(cfg)
        except StartError as exc:
            log.error("cannot start %s", exc)
            return EXIT_NOTHING_SENT
        return EXIT_OK
    if args.command == "edge":
        _setup_logging(args.verbose, logging.INFO)
        cfg = load(args.config, secrets_for=("sip", "nats"))
        if cfg is None:
            return EXIT_NOTHING_SENT
        if cfg.settings.edge is None:
            print(f"{cfg.path}: edge: add an [edge] table with this office's site", file=sys.stderr)
            return EXIT_NOTHING_SENT
        from deskbot.service.edge import EdgeStartError
        from deskbot.service.edge import run as run_edge

        try:
            run_edge(cfg)
        except EdgeStartError as exc:
            log.error("cannot start %s", exc)
            return EXIT_NOTHING_SENT
        return EXIT_OK
    if args.command == "hash-password":
        from deskbot.cli.passwords import hash_password_command

        return hash_password_command()
    if args.command == "demo":
        _setup_logging(args.verbose, logging.WARNING)
        from deskbot.cli.demo import main as demo_main
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
