"""The agent (spoke): dials the hub, holds one stream, forwards bytes to Bilibili."""
