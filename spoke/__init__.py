"""The agent (spoke): dials the hub, holds one stream, forwards bytes to Bilibili."""

import sys

# httpx imports its command-line tool (click, rich, pygments: ~6 MiB resident)
# whenever those happen to be installed, and they are (uvicorn and our own CLI
# need them). The agent never uses httpx's CLI and its memory budget is tight
# (buffer + a fixed base), so the import is declined; httpx handles that case.
sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
