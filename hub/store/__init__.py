"""The hub's SQLite database: agents, parts, tasks and their logs; recordings."""

from hub.store.database import Database
from hub.store.tasks import Store

__all__ = ["Database", "Store"]
