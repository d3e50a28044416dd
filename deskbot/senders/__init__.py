"""Ways out: the ``Sender`` protocol and its values (``base``), routing by site (``route``),
fair send slots (``fair``), the SIP agent (``sip/``) and the sites' edges (``sites/``).

A face that costs nothing to import: the SIP worker and the early start use it.
"""
