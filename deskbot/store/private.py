"""Files only deskbot's own user may read: the audit log, its WAL and SHM, the LDAP cache.

The audit log holds who sent what to whom, pending later sends and the
directory's LDAP copy. Its folder is created 0700 and the database 0600
before SQLite opens it; SQLite gives the ``-wal`` and ``-shm`` files the
database's own mode. An existing file that others can read is left as it
is (the operator may mean it) and named in a warning; a folder made before
is left alone (with the files 0600, others see only their names).
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

log = logging.getLogger("deskbot.audit")

OTHERS = stat.S_IRWXG | stat.S_IRWXO


def prepare(path: str) -> list[str]:
    """Create ``path``'s folder (0700) and the file (0600) if missing; what is readable."""
    if path == ":memory:" or path.startswith("file:"):
        return []
    file = Path(path)
    folder = file.parent
    if not folder.exists():
        folder.mkdir(parents=True, mode=0o700)  # the umask may take bits away, never add
        folder.chmod(0o700)
    os.close(os.open(file, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600))
    found = []
    for suffix in ("", "-wal", "-shm"):
        part = Path(path + suffix)
        if part.exists() and part.stat().st_mode & OTHERS:
            found.append(str(part))
    for name in found:
        log.warning("the audit log %s can be read by other users: chmod 600 %s", name, name)
    return found
