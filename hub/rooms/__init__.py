"""Rooms: per-room settings kept in the database, seeded from ``hub.yml``, edited in the console."""
