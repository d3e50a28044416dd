"""The SIP side: a supervised pjsua2 worker process, and a phone simulator."""
