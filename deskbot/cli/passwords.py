"""``deskbot hash-password``: a password on stdin, its bcrypt hash on stdout for [web.users]."""

from __future__ import annotations

import getpass
import sys

from deskbot.cli.exits import EXIT_NOTHING_SENT, EXIT_OK
from deskbot.sources.web.passwords import PasswordError, hash_password


def hash_password_command() -> int:
    if sys.stdin is None:
        print("deskbot hash-password: give the password on stdin", file=sys.stderr)
        return EXIT_NOTHING_SENT
    if sys.stdin.isatty():
        password = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != password:
            print("deskbot hash-password: the two passwords differ", file=sys.stderr)
            return EXIT_NOTHING_SENT
    else:
        password = sys.stdin.readline().removesuffix("\n").removesuffix("\r")
    try:
        print(hash_password(password))
    except PasswordError as exc:
        print(f"deskbot hash-password: {exc}; nothing printed", file=sys.stderr)
        return EXIT_NOTHING_SENT
    return EXIT_OK
