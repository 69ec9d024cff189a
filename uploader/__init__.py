"""Bilibili client (upos upload, line probe, submission, credentials) and its simulator."""
