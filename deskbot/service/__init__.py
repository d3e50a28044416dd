"""The long-running processes: ``front`` (`deskbot run`), ``edge`` (`deskbot edge`), ``health``."""
