"""Ways in: the ``Source`` and ``Replier`` protocols (``base``), the one path through the
relay (``serve``), and each platform: console, api, alerts, schedule, slack/, matrix/, web/.
"""
