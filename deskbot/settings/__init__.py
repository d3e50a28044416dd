"""Settings: the tables (schema), field validators, loading (TOML, secrets, cache), cross-checks.

A face only: import the module you need (``deskbot.settings.load``,
``deskbot.settings.schema``); importing this package costs nothing.
"""
