"""Bilibili accounts the hub uploads and submits as: stored encrypted, checked, logged in by QR."""
