"""The web console inside ``deskbot run``: sign-in (``auth``), send with live rows (``send``),
history, scheduled sends and phones (``look``); pages from ``templates/``, assets from ``static/``.
"""
