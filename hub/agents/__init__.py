"""The agent side of the hub: one gRPC stream per agent (link, sessions, messages),
registration and tokens, the clock pass, and file bytes within credit (transfer)."""
