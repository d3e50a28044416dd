"""The directory: the snapshot value (``snapshot``), loaders (``loader`` for TOML,
``ldap``) and their merge (``sync``)."""
