"""Alerts: pure rules over snapshots of hub state, a loop that samples, and delivery."""
