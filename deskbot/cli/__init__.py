"""The `deskbot` command: ``main`` (the console script), the commands, the shell, the demo.

Nothing imports this package; ``main`` imports only the standard library at
start-up, so a one-shot send can start its SIP worker first.
"""
