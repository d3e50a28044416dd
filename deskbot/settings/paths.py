"""Where the config file and the settings cache are, from the command line and environment.

Only ``os`` is imported: the console script asks before anything else is loaded
(``deskbot.cli.runhint``), and the loader and the cache ask the same way.
"""

from __future__ import annotations

import os


def config_path(cli_path: str | None) -> str:
    """``-c PATH``, else ``$DESKBOT_CONFIG``, else ``./config.toml``."""
    return cli_path or os.environ.get("DESKBOT_CONFIG") or "config.toml"


def cache_folder() -> str | None:
    """``$DESKBOT_CACHE_DIR`` (``off``: none), else ``$XDG_CACHE_HOME/deskbot``, else
    ``~/.cache/deskbot``; None without a home."""
    chosen = os.environ.get("DESKBOT_CACHE_DIR", "")
    if chosen == "off":
        return None
    if chosen:
        return chosen
    base = os.environ.get("XDG_CACHE_HOME", "")
    if base:
        return os.path.join(base, "deskbot")
    home = os.environ.get("HOME", "")
    return os.path.join(home, ".cache", "deskbot") if home else None
