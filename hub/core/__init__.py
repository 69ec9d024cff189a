"""The hub's core: what a task, an agent and an IP may do next, and the hub's live state.

Pure rules (lifecycle, retry policy, risk ledger, strategies, registry, held
leases) take plain data and an injected clock. The parts around them (state,
scheduler, admin commands, read models, recovery) apply those rules to the live
state and persist through injected ports (:mod:`hub.core.ports`). Nothing here
imports gRPC, HTTP, SQLite or the network, so every rule runs in tests with
fakes and a fake clock; the transport edges map the domain errors
(:mod:`hub.core.errors`) to their own codes.
"""
