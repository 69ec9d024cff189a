"""Command-line clients of a running hub's admin HTTP API (upload, account, recordings).

They speak only HTTP to the hub: nothing here imports the hub server.
"""
