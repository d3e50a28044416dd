"""Slack: slash commands, mentions and DMs in; threaded reports out (``adapter``)."""
