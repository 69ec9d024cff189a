"""The hub's HTTP face, the one place that speaks HTTP for the hub.

``app`` builds the whole app (``routes`` with its route groups ``agent_routes``,
``admin_routes``, ``account_routes``, ``risk_routes``, ``ingest_routes``;
``metrics``; ``audit``; ``sse``; ``web``), and ``server`` serves it. Every route authenticates through
``auth``, reads its body through ``bodies``, answers in the ``envelope``, has
the hub's errors turned into statuses by ``errors`` and sends nothing secret
(``redact``).
"""
