"""The agent side of the hub: one gRPC stream per agent, and file bytes within credit."""
