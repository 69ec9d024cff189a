"""The hub: files, database, schedule, admin HTTP API, and the gRPC link server agents dial."""
