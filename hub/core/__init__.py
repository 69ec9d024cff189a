"""The hub's pure core: task lifecycle, retry policy, risk ledger, scheduling, registry.

Plain data in, decisions out, the clock injected: nothing here touches gRPC,
HTTP, SQLite or the network, so every rule is tested with a fake clock.
"""
