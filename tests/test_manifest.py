"""The Slack app manifest in the repo matches what deskbot listens for."""

from __future__ import annotations

from pathlib import Path

import yaml

from deskbot.settings.schema import SlackSettings

MANIFEST = Path(__file__).parent.parent / "slack-app-manifest.yaml"


def test_manifest_parses_and_declares_the_command_events_and_scopes():
    manifest = yaml.safe_load(MANIFEST.read_text())
    [command] = manifest["features"]["slash_commands"]
    assert command["command"] == SlackSettings().command == "/deskphone"
    assert command["should_escape"] is True
    settings = manifest["settings"]
    assert set(settings["event_subscriptions"]["bot_events"]) == {"app_mention", "message.im"}
    assert settings["socket_mode_enabled"] is True
    scopes = set(manifest["oauth_config"]["scopes"]["bot"])
    assert {"commands", "chat:write", "app_mentions:read", "im:history", "users:read"} <= scopes
