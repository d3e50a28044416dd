"""Sites over NATS: the wire shared with the edges (``wire``) and the front's sender
(``sender``)."""
