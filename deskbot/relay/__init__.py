"""The one place for policy: the ``Relay`` (``relay``), its named ``checks``, the ``grammar``
of commands, the ``report`` wording, the ``values`` it trades with sources, later sends
(``later``), replays from the log (``replay``) and rate windows (``window``).
"""
