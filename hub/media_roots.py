"""Which files the hub will upload: those under its media roots, never its own data.

Whoever creates a part names a path on the hub (the admin API, a recorder's
webhook, the folder watcher), and the hub then streams that file's bytes to an
agent and on to Bilibili. Without a fence, an admin token (or a bug) could send
the hub's ``secret.key``, ``token.secret`` or ``/etc/passwd`` out through the
mesh. So a part's file must lie, after every symlink and ``..`` is resolved,
under one of:

- ``media_roots`` in the hub config (default: the directory the hub was started
  in, which is where a new user's recordings and ``bupmesh upload FILE`` are);
- the ingest directories (``ingest.bililive_recorder_work_dir``,
  ``blrec_work_dir``, ``watch_dirs``), whose files the hub imports by itself;

and never inside the data directory, even when a root contains it. A refusal
names the rule it broke (``Forbidden``: HTTP 403). Roots are resolved at each
check, so a mount that appears after the hub started counts.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from hub.config import HubConfig
from hub.core.errors import Forbidden


class MediaRoots:
    def __init__(self, roots: Iterable[str], data_dir: str) -> None:
        self.roots = [r for r in dict.fromkeys(str(r) for r in roots) if r]
        self.data_dir = data_dir

    @classmethod
    def from_config(cls, config: HubConfig) -> MediaRoots:
        ingest = config.ingest
        extra = [ingest.bililive_recorder_work_dir, ingest.blrec_work_dir, *ingest.watch_dirs]
        return cls([*config.media_root_list, *(d for d in extra if d)], config.data_dir)

    def check(self, path: Path) -> Path:
        """``path`` (already resolved) if the hub may upload it; Forbidden naming the rule."""
        data = _resolve(self.data_dir)
        if path == data or path.is_relative_to(data):
            raise Forbidden(f"{path} is inside the hub's data directory ({data}), whose "
                            "files are never uploaded")
        roots = [_resolve(r) for r in self.roots]
        if not any(path.is_relative_to(root) for root in roots):
            raise Forbidden(f"{path} is outside the hub's media roots "
                            f"({', '.join(str(r) for r in roots)}); add its directory to "
                            "media_roots in the hub config")
        return path


def _resolve(path: str) -> Path:
    return Path(os.path.realpath(Path(path).expanduser()))
