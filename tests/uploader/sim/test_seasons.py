"""The simulator's collections: created by the control, listed, archives added to a section.

Plain HTTP to a real simulator process (the `sim` fixture, reset before each test).
"""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import SimServer
from tests.uploader.sim.archive_flow import (
    OTHER_COOKIES,
    add_other_account,
    archives,
    body,
    decide,
    submit,
    uploaded,
)
from tests.uploader.sim.flow import COOKIES


def new_season(sim: SimServer, **fields: object) -> dict:
    response = httpx.post(f"{sim.url}/_sim/seasons", json={"title": "录播合集", **fields})
    response.raise_for_status()
    return response.json()["season"]


def add(sim: SimServer, payload: dict, cookies: dict | None = None, csrf: str | None = None
        ) -> dict:  # fmt: skip
    cookies = cookies or COOKIES
    csrf = csrf or cookies["bili_jct"]
    return httpx.post(
        f"{sim.url}/x2/creative/web/season/section/episodes/add", params={"csrf": csrf},
        json={**payload, "csrf": csrf}, cookies=cookies,
    ).json()  # fmt: skip


def episode(created: dict, video: dict, title: str = "第一场") -> dict:
    return {"aid": created["aid"], "cid": video["cid"], "title": title, "charging_pay": 0}


def test_seasons_list_shows_sections(sim: SimServer) -> None:
    season = new_season(sim, sections=2)
    add_other_account(sim)
    new_season(sim, mid=20002)
    reply = httpx.get(f"{sim.url}/x2/creative/web/seasons", params={"pn": 1, "ps": 30},
                      cookies=COOKIES).json()  # fmt: skip
    assert reply["code"] == 0 and reply["data"]["total"] == 1
    [item] = reply["data"]["seasons"]
    assert item["season"]["id"] == season["season_id"]
    sections = item["sections"]["sections"]
    assert [s["title"] for s in sections] == ["正片", "第2节"]
    assert [s["id"] for s in sections] == [s["section_id"] for s in season["sections"]]
    assert item["part_episodes"] is None
    assert httpx.get(f"{sim.url}/x2/creative/web/seasons").json()["code"] == -101


def test_add_an_archive_to_a_section(sim: SimServer) -> None:
    season = new_season(sim)
    section_id = season["sections"][0]["section_id"]
    videos = uploaded(sim)
    created = submit(sim, body(videos))["data"]
    reply = add(sim, {"sectionId": section_id, "episodes": [episode(created, videos[0])]})
    assert reply == {"code": 0, "message": "0", "ttl": 1}
    [record] = archives(sim)
    assert record["season"] == {"season_id": season["season_id"], "section_id": section_id}
    [stored] = httpx.get(f"{sim.url}/_sim/seasons").json()["seasons"]
    [ep] = stored["sections"][0]["episodes"]
    assert (ep["aid"], ep["cid"], ep["title"]) == (created["aid"], videos[0]["cid"], "第一场")
    again = add(sim, {"sectionId": section_id, "episodes": [episode(created, videos[0])]})
    assert again["code"] == 20080  # already in the collection


def test_snake_case_answers_zero_and_does_nothing(sim: SimServer) -> None:
    """What users report of the real endpoint: a silent no-op, caught here too."""
    section_id = new_season(sim)["sections"][0]["section_id"]
    videos = uploaded(sim)
    created = submit(sim, body(videos))["data"]
    reply = add(sim, {"section_id": section_id, "episode": [episode(created, videos[0])]})
    assert reply["code"] == 0
    assert archives(sim)[0]["season"] is None


@pytest.mark.parametrize(
    ("change", "code", "needle"),
    [
        ({"sectionId": 1}, -404, ""),
        ({"episodes": []}, -400, "episodes"),
        ({"episodes": [{"aid": 1, "cid": 1, "title": "t"}]}, -400, "aid"),
        ("bad cid", -400, "cid"),
        ("no title", -400, "title"),
    ],
)
def test_add_is_checked(sim: SimServer, change: object, code: int, needle: str) -> None:
    section_id = new_season(sim)["sections"][0]["section_id"]
    videos = uploaded(sim)
    created = submit(sim, body(videos))["data"]
    good = episode(created, videos[0])
    payload: dict = {"sectionId": section_id, "episodes": [good]}
    if change == "bad cid":
        payload["episodes"] = [{**good, "cid": good["cid"] + 1}]
    elif change == "no title":
        payload["episodes"] = [{**good, "title": " "}]
    else:
        assert isinstance(change, dict)
        payload.update(change)
    reply = add(sim, payload)
    assert reply["code"] == code and needle in reply["message"]
    assert archives(sim)[0]["season"] is None


def test_add_refuses_strangers(sim: SimServer) -> None:
    add_other_account(sim)
    theirs = new_season(sim, mid=20002)["sections"][0]["section_id"]
    videos = uploaded(sim)
    created = submit(sim, body(videos))["data"]
    assert add(sim, {"sectionId": theirs, "episodes": [episode(created, videos[0])]}
               )["code"] == -404  # fmt: skip
    ours = new_season(sim)["sections"][0]["section_id"]
    assert add(sim, {"sectionId": ours, "episodes": [episode(created, videos[0])]},
               csrf="wrong")["code"] == -111  # fmt: skip
    reply = add(sim, {"sectionId": ours, "episodes": [episode(created, videos[0])]},
                cookies=OTHER_COOKIES)  # fmt: skip
    assert reply["code"] == -404


def test_approval_switch_holds_pending_archives_back(sim: SimServer) -> None:
    sim.config(archive={"season_needs_approval": True, "review": {"delay_seconds": 3600}})
    section_id = new_season(sim)["sections"][0]["section_id"]
    videos = uploaded(sim)
    created = submit(sim, body(videos))["data"]
    payload = {"sectionId": section_id, "episodes": [episode(created, videos[0])]}
    refused = add(sim, payload)
    assert refused["code"] == -400 and "review" in refused["message"]
    decide(sim, created["aid"], outcome="approve")
    assert add(sim, payload)["code"] == 0


def test_control_refuses_bad_seasons(sim: SimServer) -> None:
    for bad, needle in (({"title": ""}, "title"), ({"sections": 0}, "sections"),
                        ({"colour": "red"}, "colour")):  # fmt: skip
        reply = httpx.post(f"{sim.url}/_sim/seasons", json=bad)
        assert reply.status_code == 400 and needle in reply.json()["error"]
