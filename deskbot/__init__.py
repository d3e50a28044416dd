"""deskbot: carry a chat command to a desk phone's screen and the phone's answer back."""

__version__ = "0.1.0"
