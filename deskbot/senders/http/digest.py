"""HTTP Digest (RFC 7616, MD5 or SHA-256, qop=auth) and Basic credentials, from trusted parts.

A challenge comes from the network: it is parsed with a bound, and only its
realm, nonce, opaque, algorithm and qop are used (quoted back escaped). The
user name was checked by the settings (no quotes, no spaces, no CR/LF).
"""

from __future__ import annotations

import base64
import hashlib
import os
import re

MAX_CHALLENGE = 2048
_PARAM = re.compile(r'([A-Za-z]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))')
_SAFE = re.compile(r"[\x20-\x7e]*")  # printable ASCII: nothing that could end a header
HASHES = {"MD5": hashlib.md5, "SHA-256": hashlib.sha256}


class ChallengeError(ValueError):
    """A challenge deskbot cannot answer (no Digest, an unknown algorithm, odd characters)."""


def basic(username: str, password: str) -> str:
    token = base64.b64encode(f"{username}:{password}".encode()).decode("ascii")
    return f"Basic {token}"


def parse(header: str) -> dict[str, str]:
    """``WWW-Authenticate: Digest ...`` -> its parameters (lower-case names)."""
    header = header[:MAX_CHALLENGE]
    scheme, _, rest = header.strip().partition(" ")
    if scheme.lower() != "digest":
        raise ChallengeError(f"the phone asks for {scheme[:20]!r} authentication, not Digest")
    params = {
        m.group(1).lower(): (m.group(2) if m.group(2) is not None else m.group(3))
        for m in _PARAM.finditer(rest)
    }
    for name in ("realm", "nonce"):
        if name not in params:
            raise ChallengeError(f"the phone's Digest challenge has no {name}")
    for value in params.values():
        if not _SAFE.fullmatch(value):
            raise ChallengeError("the phone's Digest challenge has characters a header cannot take")
    return params


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def authorization(
    challenge: dict[str, str],
    method: str,
    path: str,
    username: str,
    password: str,
    cnonce: str = "",
) -> str:
    """The ``Authorization`` header answering ``challenge`` for one request."""
    algorithm = challenge.get("algorithm", "MD5")
    hash_name = algorithm.upper().removesuffix("-SESS")
    if hash_name not in HASHES:
        raise ChallengeError(f"the phone wants Digest algorithm {algorithm[:20]!r}")

    def h(text: str) -> str:
        return HASHES[hash_name](text.encode()).hexdigest()

    realm, nonce = challenge["realm"], challenge["nonce"]
    cnonce = cnonce or os.urandom(8).hex()
    ha1 = h(f"{username}:{realm}:{password}")
    if algorithm.upper().endswith("-SESS"):
        ha1 = h(f"{ha1}:{nonce}:{cnonce}")
    ha2 = h(f"{method}:{path}")
    qops = [q.strip() for q in challenge.get("qop", "").split(",") if q.strip()]
    parts = [
        f'username="{_quote(username)}"',
        f'realm="{_quote(realm)}"',
        f'nonce="{_quote(nonce)}"',
        f'uri="{_quote(path)}"',
        f"algorithm={algorithm}",
    ]
    if "auth" in qops:
        nc = "00000001"
        response = h(f"{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}")
        parts += ["qop=auth", f"nc={nc}", f'cnonce="{cnonce}"']
    elif qops:
        raise ChallengeError(f"the phone wants Digest qop {challenge['qop'][:20]!r}")
    else:
        response = h(f"{ha1}:{nonce}:{ha2}")
    parts.append(f'response="{response}"')
    if "opaque" in challenge:
        parts.append(f'opaque="{_quote(challenge["opaque"])}"')
    return "Digest " + ", ".join(parts)
