"""What deskbot keeps: the audit log, idempotency keys and deferred sends.

``base`` holds the values and the interface a backend implements; ``audit``
and ``deferred`` are the SQLite backend, one module per table family.
"""
