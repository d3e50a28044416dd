"""Validated settings kept between one-shot commands, so `deskbot send` skips pydantic.

A file is validated once; its Settings are kept under a key made of the
file's bytes, its folder (relative paths in it are taken from there), the
source of every module that validation runs and the installed versions of the
libraries it uses, so any change to one of them is validated afresh.
Secrets are never kept: they are read from the environment each time.

The cache is ``$XDG_CACHE_HOME/deskbot`` (else ``~/.cache/deskbot``, or
``DESKBOT_CACHE_DIR``; ``DESKBOT_CACHE_DIR=off`` turns it off). A cached file
is read only if this user owns it and its folder and nobody else may write
either, and it is read with an unpickler that builds only the settings
schema's own tables: a planted file can name no other class or function. Anything
unexpected (no home, a full disk, a stranger's file) means "not cached": the
file is validated as if the cache did not exist.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import pickle
import stat
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deskbot.settings import paths

if TYPE_CHECKING:
    from deskbot.settings.schema import Settings

log = logging.getLogger("deskbot.config")

KEEP = 16  # files; the oldest beyond this are removed when one is written
MAX_BYTES = 64 << 20  # a 16 MB config pickles to far less
# every module that validation runs, relative to the deskbot package
_CODE = (
    "__init__.py",
    "sipuri.py",
    "notices.py",
    "settings/__init__.py",
    "settings/schema.py",
    "settings/fields.py",
    "settings/load.py",
    "settings/checks.py",
    "settings/formats.py",
    "settings/plans.py",
    "settings/cache.py",
    "settings/paths.py",
)
# the libraries validation uses (pydantic's own, cronsim for schedules, tzdata for zones)
_LIBRARIES = (
    "pydantic",
    "pydantic_core",
    "annotated_types",
    "typing_extensions",
    "typing_inspection",
    "cronsim",
    "tzdata",
)
_FORMAT = b"deskbot-settings-2"


def folder() -> Path | None:
    where = paths.cache_folder()
    return None if where is None else Path(where)


def key(data: bytes, config_folder: Path) -> str:
    """The cache file's name: what the Settings depend on, hashed."""
    digest = hashlib.sha256(_FORMAT)
    code = Path(__file__).parent.parent
    for name in _CODE:
        digest.update((code / name).read_bytes())
    digest.update(versions())
    digest.update(os.fsencode(config_folder) + b"\0")
    digest.update(data)
    return digest.hexdigest()


def versions() -> bytes:
    """The installed versions of ``_LIBRARIES``, from their dist-info folders' names.

    Nothing is imported: the first folder on ``sys.path`` that has a library's
    ``NAME-VERSION.dist-info`` is the one Python would import it from.
    """
    found: dict[str, str] = {}
    for entry in sys.path:
        try:
            names = os.listdir(entry or ".")
        except OSError:  # a zip file, a folder that is gone
            continue
        for name in names:
            if name.endswith(".dist-info"):
                project = name.split("-", 1)[0].lower().replace(".", "_")
                if project in _LIBRARIES:
                    found.setdefault(project, name)
    return "\n".join(f"{lib}={found.get(lib, '-')}" for lib in _LIBRARIES).encode()


def get(name: str) -> Settings | None:
    """The settings kept under ``name`` (a ``key``), or None."""
    where = folder()
    if where is None:
        return None
    try:
        if not _private(os.lstat(where)):
            return None
        fd = os.open(where / f"{name}.pickle", os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as file:
        info = os.fstat(file.fileno())
        if not (_private(info) and stat.S_ISREG(info.st_mode) and info.st_size <= MAX_BYTES):
            log.warning("not using the settings cache %s: not this user's own file", where)
            return None
        try:
            settings = _Tables(io.BytesIO(file.read())).load()
        except Exception as exc:
            log.warning("not using the settings cache %s: %s", where, type(exc).__name__)
            return None
    from deskbot.settings.schema import Settings

    return settings if isinstance(settings, Settings) else None


def put(name: str, settings: Settings) -> None:
    where = folder()
    if where is None:
        return
    try:
        where.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not _private(os.lstat(where)):
            return
        import tempfile

        fd, temporary = tempfile.mkstemp(dir=where, prefix=".new-")  # mode 0600
        try:
            with os.fdopen(fd, "wb") as file:
                pickle.dump(settings, file, protocol=pickle.HIGHEST_PROTOCOL)
            os.replace(temporary, where / f"{name}.pickle")
        finally:
            Path(temporary).unlink(missing_ok=True)
        kept = sorted(where.glob("*.pickle"), key=lambda p: p.stat().st_mtime, reverse=True)
        for old in kept[KEEP:]:
            old.unlink(missing_ok=True)
    except OSError as exc:
        log.debug("settings not cached: %s", exc)


def _private(info: os.stat_result) -> bool:
    """Owned by this user, and neither its group nor others may write it."""
    return (
        info.st_uid == os.geteuid() and not info.st_mode & 0o022 and not stat.S_ISLNK(info.st_mode)
    )


class _Tables(pickle.Unpickler):
    """An unpickler that can build the settings schema's dataclasses and nothing else."""

    def find_class(self, module: str, name: str) -> Any:
        from deskbot.settings import schema

        wanted = getattr(schema, name, None) if module == "deskbot.settings.schema" else None
        if isinstance(wanted, type) and hasattr(wanted, "__dataclass_fields__"):
            return wanted
        raise pickle.UnpicklingError(f"{module}.{name} is not a settings table")
