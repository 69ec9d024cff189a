"""hub/retention/executor.py on real files: deletes and moves that check before acting,
never overwrite, and a restart after a stop between any two steps of a move (within one
filesystem and across, by copy) that ends with the file in place or moved, never lost.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from hub.retention import executor as ex


def recording(tmp_path: Path, data: bytes = b"flv" * 1000) -> tuple[str, ex.Identity]:
    src = tmp_path / "rec" / "1001-主播" / "录制.flv"
    src.parent.mkdir(parents=True, exist_ok=True)
    src.write_bytes(data)
    identity = ex.identity_of(str(src))
    assert identity is not None
    return str(src), identity


def row(src: str, dest: str, phase: str, op: str = "move") -> dict[str, Any]:
    return {"op": op, "source": src, "destination": dest, "temporary": ex.temporary_for(dest),
            "phase": phase, "size": os.path.getsize(src) if os.path.exists(src) else 3000}


def test_delete_checks_the_identity_first(tmp_path: Path) -> None:
    src, identity = recording(tmp_path)
    with open(src, "ab") as fh:
        fh.write(b"more")
    with pytest.raises(ex.Changed):
        ex.delete(src, identity)
    assert os.path.exists(src)
    fresh = ex.identity_of(src)
    assert fresh is not None
    ex.delete(src, fresh)
    assert not os.path.exists(src)
    with pytest.raises(FileNotFoundError):
        ex.delete(src, fresh)


def test_a_changed_file_is_not_moved(tmp_path: Path) -> None:
    src, identity = recording(tmp_path)
    os.utime(src, ns=(1, 1))
    dest = str(tmp_path / "keep" / "x.flv")
    ex.prepare(dest)
    with pytest.raises(ex.Changed):
        ex.link(src, dest, identity)
    with pytest.raises(ex.Changed):
        ex.copy(src, ex.temporary_for(dest), identity)
    assert not os.path.exists(dest) and not os.path.exists(ex.temporary_for(dest))


def test_a_move_never_replaces_a_file(tmp_path: Path) -> None:
    src, identity = recording(tmp_path)
    dest = tmp_path / "keep" / "录制.flv"
    dest.parent.mkdir()
    dest.write_bytes(b"someone else's")
    with pytest.raises(ex.Taken):
        ex.prepare(str(dest))
    other = tmp_path / "keep" / "other.flv"
    ex.prepare(str(other))
    other.write_bytes(b"appeared meanwhile")  # between the check and the link
    with pytest.raises(ex.Taken):
        ex.link(src, str(other), identity)
    temp = ex.temporary_for(str(other))
    ex.copy(src, temp, identity)
    with pytest.raises(ex.Taken):
        ex.place(temp, str(other))
    assert other.read_bytes() == b"appeared meanwhile" and dest.read_bytes() == b"someone else's"
    assert os.path.exists(src) and not os.path.exists(temp)


def test_link_move_and_copy_move_keep_the_bytes(tmp_path: Path) -> None:
    src, identity = recording(tmp_path, os.urandom(3 * 1024 * 1024 + 7))
    data = Path(src).read_bytes()
    dest = str(tmp_path / "keep" / "a" / "录制.flv")
    ex.prepare(dest)
    assert ex.link(src, dest, identity)
    ex.drop_source(src, dest, identity.size)
    assert Path(dest).read_bytes() == data and not os.path.exists(src)
    src2, identity2 = recording(tmp_path, data)
    dest2 = str(tmp_path / "keep" / "b" / "录制.flv")
    ex.prepare(dest2)
    temp = ex.temporary_for(dest2)
    ex.copy(src2, temp, identity2)  # what a move across filesystems does
    ex.place(temp, dest2)
    ex.drop_source(src2, dest2, identity2.size)
    assert Path(dest2).read_bytes() == data and not os.path.exists(src2)
    assert os.stat(dest2).st_mtime_ns == identity2.mtime_ns  # the recording's time kept


def move_steps(src: str, dest: str, identity: ex.Identity, *, by_copy: bool) -> list[Any]:
    """The steps of a move as the service runs them, with the journal's phases between."""
    temp = ex.temporary_for(dest)
    steps: list[Any] = [lambda: ex.prepare(dest)]
    if by_copy:  # across filesystems
        steps += [lambda: ex.copy(src, temp, identity), "copied", lambda: ex.place(temp, dest)]
    else:
        steps += [lambda: ex.link(src, dest, identity)]
    return [*steps, "placed", lambda: ex.drop_source(src, dest, identity.size)]


@pytest.mark.parametrize("by_copy", [False, True], ids=["link", "copy"])
def test_a_stop_between_any_two_steps_leaves_the_file_in_place_or_moved(
        tmp_path: Path, by_copy: bool) -> None:
    steps = 6 if by_copy else 4
    data = os.urandom(200_000)
    for stop in range(steps + 1):
        work = tmp_path / f"stop{stop}"
        src, identity = recording(work, data)
        dest = str(work / "keep" / "录制.flv")
        temp = ex.temporary_for(dest)
        phase = "start"
        actions = move_steps(src, dest, identity, by_copy=by_copy)
        for action in actions[:stop]:
            if isinstance(action, str):
                phase = action
            else:
                action()
        outcome, note = ex.recover(row(src, dest, phase) | {"size": len(data)})
        here, there = os.path.exists(src), os.path.exists(dest)
        assert here != there, (stop, outcome)  # in one place: never lost, never twice
        if outcome == ex.DONE:
            assert not here and Path(dest).read_bytes() == data, (stop, note)
        else:
            assert outcome == ex.ROLLED_BACK and Path(src).read_bytes() == data, (stop, note)
            assert not there  # a rolled back move leaves no copy behind
        assert not os.path.exists(temp), stop
        if Path(dest).parent.exists():
            assert {p.name for p in Path(dest).parent.iterdir()} <= {"录制.flv"}


def test_recovering_a_delete(tmp_path: Path) -> None:
    src, _ = recording(tmp_path)
    outcome, _ = ex.recover({"op": "delete", "source": src, "destination": None,
                             "temporary": None, "phase": "start", "size": 3000})
    assert outcome == ex.ROLLED_BACK and os.path.exists(src)
    os.unlink(src)
    outcome, _ = ex.recover({"op": "delete", "source": src, "destination": None,
                             "temporary": None, "phase": "start", "size": 3000})
    assert outcome == ex.DONE
