"""The hub's HTTP face: admin and agent routes, live events, audit, the web page."""
