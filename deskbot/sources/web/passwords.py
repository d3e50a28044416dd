"""Password hashes for ``[web.users]``: bcrypt, from the well-kept ``bcrypt`` package."""

from __future__ import annotations

import functools

import bcrypt

ROUNDS = 12  # about 0.2 s per check on one core: slow for guessing, fine for a person
MAX_BYTES = 72  # bcrypt reads no further; longer passwords are refused, not cut silently


@functools.cache
def _dummy() -> bytes:
    """Checked when the name is unknown, so a wrong name takes as long as a wrong password."""
    return bcrypt.hashpw(b"not a password of anyone", bcrypt.gensalt(ROUNDS))


class PasswordError(ValueError):
    """A password that cannot be hashed; the message says why."""


def hash_password(password: str) -> str:
    raw = password.encode()
    if not raw:
        raise PasswordError("the password is empty")
    if len(raw) > MAX_BYTES:
        raise PasswordError(f"the password is over {MAX_BYTES} bytes (bcrypt's limit)")
    return bcrypt.hashpw(raw, bcrypt.gensalt(ROUNDS)).decode()


def verify(password: str, hashed: str | None) -> bool:
    """True when ``password`` matches ``hashed``; None (no such user) checks a dummy, False."""
    raw = password.encode()[: MAX_BYTES + 1]
    target = hashed.encode() if hashed else _dummy()
    try:
        ok = bcrypt.checkpw(raw, target)
    except ValueError:  # a malformed hash (the config validates them) or an overlong password
        return False
    return ok and hashed is not None and len(raw) <= MAX_BYTES
