"""bupmesh: upload recordings to Bilibili through a mesh of agents on many IPs."""

__version__ = "0.1.0"
