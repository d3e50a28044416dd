"""Slack: slash commands, mentions and DMs in; threaded reports out."""

from deskbot.sources.slack.adapter import SlackSource

__all__ = ["SlackSource"]
