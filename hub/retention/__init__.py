"""Retention: what becomes of a recording's files once the hub is done with them.

``policy`` decides (pure), ``executor`` deletes and moves (IO, journaled),
``store`` keeps each file's retention state and the journal, ``service`` runs it
all in the hub and records every action and refusal.
"""
