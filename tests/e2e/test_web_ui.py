"""The web UI in a real browser: Debian's headless Chromium driven by Playwright.

A real simulator, hub and three agents (127.0.0.2-4); the simulator caps each IP's
upload bandwidth so one 8 MiB part takes a few seconds, in 1 MiB upos chunks. The
page logs in with the admin token, shows the three agents online, follows one
task's progress bar through several values to completion without a reload (and
without polling the API: the values arrive over the event stream), and disables
an agent, which the page and the admin API then both show. The page's files (the
HTML, the style sheet and every module it imports) are checked first: no outside
assets (it works offline) and a strict CSP.

The browser is never downloaded (tests/support/browser.py).
"""

from __future__ import annotations

import re
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bupmesh.localmesh import OPEN_RISK_YAML, LocalMesh, wait_for, write_random_file
from tests.support.browser import open_page

pytestmark = pytest.mark.e2e

MiB = 1024 * 1024
PART_SIZE = 8 * MiB
BANDWIDTH_BPS = 2_000_000  # per source IP at the simulator: about 4 s for the part

# Records every value the task's progress bar takes (with the speed and ETA shown
# beside it) as the page changes it, so nothing depends on how often we look.
WATCH_PROGRESS_JS = """
(taskId) => {
  window.__seen = [];
  const body = document.getElementById("tasks-body");
  const record = () => {
    const row = body.querySelector(`tr[data-key="${taskId}"]`);
    if (!row) return;
    const bar = row.querySelector("progress");
    const entry = [bar.dataset.progress, row.querySelector(".col-speed").textContent,
                   row.querySelector(".col-eta").textContent, row.dataset.status];
    const last = window.__seen[window.__seen.length - 1];
    if (!last || last.join() !== entry.join()) window.__seen.push(entry);
  };
  new MutationObserver(record).observe(body, {subtree: true, attributes: true,
                                              childList: true, characterData: true});
  record();
}
"""

PARSER_JS = """
async () => {
  const { readEvents } = await import("/ui/stream.js");
  const bytes = new TextEncoder().encode(
    'event: task\\ndata: {"a":1}\\n\\n: keep-alive\\n\\n' +
    'event: agent\\r\\ndata: {"t":"直播"}\\r\\n\\r\\nevent: ips\\ndata: {"c":3}\\n\\n');
  const cuts = [5, 20, 44, 60, 68, bytes.length];  // 68 falls inside "直" (bytes 67-69)
  const body = new ReadableStream({start(controller) {
    let from = 0;
    for (const to of cuts) { controller.enqueue(bytes.slice(from, to)); from = to; }
    controller.close();
  }});
  const got = [];
  await readEvents(body, (name, data) => got.push([name, data]));
  return got;
}
"""


@pytest.fixture
def mesh(tmp_path: Path) -> Iterator[LocalMesh]:
    with LocalMesh(tmp_path / "mesh", media_roots=(str(tmp_path),)) as local:
        local.start_sim()
        local.start_hub(config_yaml=OPEN_RISK_YAML)
        for index in (1, 2, 3):
            local.start_agent(index)
        local.wait_agents_online(3)
        local.add_account("main")
        local.sim("POST", "/_sim/config",
                  json={"chunk_size": MiB, "faults": {"bandwidth_bps": BANDWIDTH_BPS}})
        yield local


@pytest.fixture
def browser_page(tmp_path: Path) -> Iterator[object]:
    """A page of a fresh Chromium profile whose browser speaks English."""
    with open_page(tmp_path / "chromium-profile", "en-US") as page:
        yield page


def test_login_live_progress_and_disable_an_agent(mesh: LocalMesh, browser_page: object,
                                                  tmp_path: Path) -> None:
    from playwright.sync_api import Page, expect

    check_static_files(mesh)
    page: Page = browser_page  # type: ignore[assignment]
    api_calls: list[str] = []
    page.on("request", lambda request: api_calls.append(request.url))
    page.goto(mesh.hub_url + "/")

    # Login: a wrong token is refused on the page; the right one opens the app.
    page.fill("#token", "not-the-token")
    page.click("#login-form button[type=submit]")
    expect(page.locator("#login-error")).to_have_text("Wrong admin or viewer token.")
    expect(page.locator("#app")).to_be_hidden()
    page.fill("#token", mesh.admin_token)
    page.click("#login-form button[type=submit]")
    expect(page.locator("#app")).to_be_visible()
    expect(page.locator("#live")).to_have_attribute("data-state", "live")
    assert mesh.admin_token not in page.url
    assert page.evaluate("sessionStorage.getItem('bupmesh.adminToken')") == mesh.admin_token

    # The page's stream parser, fed events cut at awkward places (mid-JSON, mid-UTF-8
    # character, CRLF line ends, a keep-alive comment between events).
    parsed = page.evaluate(PARSER_JS)
    assert parsed == [["task", {"a": 1}], ["agent", {"t": "直播"}], ["ips", {"c": 3}]]

    # Three agents online, each with its own egress IP, and the link address it dials from.
    online = page.locator("#agents-body tr[data-status=online]")
    expect(online).to_have_count(3)
    for index in (1, 2, 3):
        expect(page.locator(f'#agents-body tr[data-key="agent-{index}"] .col-ip')) \
            .to_have_text(re.compile(rf"^127\.0\.0\.{index + 1} via 127\.0\.0\.1$"))

    # One upload; its progress bar moves on the page while the API is not polled.
    page.evaluate("window.__sameDocument = true")
    # What the page reads once at login (rooms, accounts, retention) has arrived.
    expect(page.locator("#app")).to_have_attribute("data-loaded", "true")
    source = tmp_path / "recording.flv"
    md5 = write_random_file(source, PART_SIZE, seed=6)
    before_upload = len(api_calls)
    task_id = mesh.add_part(source)["task_id"]
    row = page.locator(f'#tasks-body tr[data-key="{task_id}"]')
    expect(row).to_have_count(1)
    page.evaluate(WATCH_PROGRESS_JS, task_id)
    expect(row).to_have_attribute("data-status", "completed", timeout=60_000)
    expect(row.locator("progress")).to_have_attribute("data-progress", "100.00")

    seen = page.evaluate("window.__seen")
    values = sorted({float(progress) for progress, *_ in seen})
    between = [v for v in values if 0 < v < 100]
    assert len(between) >= 3, seen  # several distinct values on the way, not a jump
    assert values[-1] == 100.0, seen
    assert [float(p) for p, *_ in seen] == sorted(float(p) for p, *_ in seen), seen
    uploading = [(speed, eta) for _, speed, eta, status in seen if status == "uploading"]
    assert any(re.fullmatch(r"[\d.]+ (B|KiB|MiB)/s", s) for s, _ in uploading), seen
    assert any(re.fullmatch(r"\d+ s", e) for _, e in uploading), seen
    assert page.evaluate("window.__sameDocument") is True  # never reloaded
    during = [u for u in api_calls[before_upload:] if "/api/" in u]
    assert during == [], during  # every value was pushed over the one open stream

    uploads = mesh.sim_uploads()
    assert [(u["size"], u["md5"]) for u in uploads] == [(PART_SIZE, md5)]

    # Disable agent-3 from the page: the page and the admin API both say so.
    agent3 = page.locator('#agents-body tr[data-key="agent-3"]')
    agent3.locator("button.act-disable").click()
    expect(agent3).to_have_attribute("data-status", "disabled")
    expect(agent3.locator("button.act-enable")).to_be_visible()
    expect(agent3.locator("button.act-disable")).to_be_hidden()
    wait_for(lambda: {a["agent_id"]: a["status"] for a in mesh.agents()}.get("agent-3")
             == "disabled", 10, "agent-3 disabled in the API")
    assert all(a["disabled"] is (a["agent_id"] == "agent-3") for a in mesh.agents())
    expect(online).to_have_count(2)

    # Task log opens from the task's row.
    row.locator("button.act-logs").click()
    expect(page.locator("#logs-dialog")).to_be_visible()
    expect(page.locator("#logs-body")).to_contain_text("success")
    # The recordings section says so when the hub has none (or no recordings API).
    expect(page.locator("#recordings-empty")).to_be_visible()


def check_static_files(mesh: LocalMesh) -> None:
    """Served at / with no outside assets (works offline) and a strict CSP; every module
    the page imports is served by the hub itself."""
    page = httpx.get(mesh.hub_url + "/", timeout=10)
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "default-src 'none'" in csp
    bodies = {"/": page.text}
    todo = ["/ui/style.css", *re.findall(r'src="(/ui/[\w.-]+\.js)"', page.text)]
    while todo:
        path = todo.pop()
        if path in bodies:
            continue
        response = httpx.get(mesh.hub_url + path, timeout=10)
        kind = "text/css" if path.endswith(".css") else "text/javascript"
        assert response.status_code == 200, path
        assert response.headers["content-type"].startswith(kind), path
        bodies[path] = response.text
        todo += ["/ui/" + name for name in re.findall(r'from "\./([\w.-]+\.js)"', response.text)]
    assert {"/ui/main.js", "/ui/stream.js", "/ui/i18n.js", "/ui/strings-zh-CN.js",
            "/ui/access.js"} <= set(bodies)
    ids = re.findall(r'\bid="([^"]+)"', page.text)
    assert len(ids) == len(set(ids)), "an id used twice"  # sections merged from two sides
    for body in bodies.values():
        # The SVG namespace is a name, never fetched; anything else would be an asset.
        body = body.replace("http://www.w3.org/2000/svg", "")
        assert not re.search(r"https?://|//cdn|@import", body), "an outside asset"
    assert httpx.get(mesh.hub_url + "/ui/secret.key", timeout=10).status_code == 404
    assert httpx.get(mesh.hub_url + "/ui/__init__.py", timeout=10).status_code == 404


def seed_finished_tasks(db: Path, n: int) -> None:
    """``n`` finished tasks (one part each) written into a stopped hub's database, as a
    long-running hub's history would hold them; every tenth one failed."""
    now = time.time()
    conn = sqlite3.connect(db)
    with conn:
        conn.executemany(
            "INSERT INTO parts (id, file_path, size, md5, account, title, state, created_at) "
            "VALUES (?,?,?,?,?,?,?,?)",
            [(i, f"/rec/old-{i:04d}.flv", 1000 + i, f"{i:032x}", "main", f"part {i}",
              "uploaded", now - 86400 + i) for i in range(1, n + 1)])
        conn.executemany(
            "INSERT INTO agent_tasks (task_id, agent_id, part_id, file_path, file_size, "
            "file_md5, status, created_at, completed_at, account, attempt) "
            "VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            [(f"task-old-{i:04d}", "agent-1", i, f"/rec/old-{i:04d}.flv", 1000 + i,
              f"{i:032x}", "failed" if i % 10 == 0 else "completed", now - 86400 + i,
              now - 86400 + i + 60, "main", 1) for i in range(1, n + 1)])
    conn.close()


def test_older_tasks_load_a_page_at_a_time(tmp_path: Path, browser_page: object) -> None:
    """The live view carries the unfinished and the 200 newest finished tasks; the rest of
    the history loads on demand in "Older tasks", a page (100) at a time, filtered."""
    from playwright.sync_api import Page, expect

    with LocalMesh(tmp_path / "mesh") as mesh:
        mesh.start_hub().stop()  # creates the schema
        seed_finished_tasks(tmp_path / "mesh" / "hub-data" / "bupmesh.db", 230)
        mesh.restart_hub()
        page: Page = browser_page  # type: ignore[assignment]
        page.goto(mesh.hub_url + "/")
        page.fill("#token", mesh.admin_token)
        page.click("#login-form button[type=submit]")
        expect(page.locator("#live")).to_have_attribute("data-state", "live")
        expect(page.locator("#tasks-body tr")).to_have_count(200)
        expect(page.locator('#tasks-body tr[data-key="task-old-0230"]')).to_have_count(1)
        expect(page.locator('#tasks-body tr[data-key="task-old-0030"]')).to_have_count(0)

        older = page.locator("#older-body tr")
        expect(older).to_have_count(0)
        expect(page.locator("#older-more")).to_be_hidden()
        page.click("#older-form button[type=submit]")
        expect(older).to_have_count(100)
        expect(older.first).to_have_attribute("data-key", "task-old-0230")
        expect(page.locator("#older-summary")).to_have_text("100 shown, older on demand")
        page.click("#older-more")
        expect(older).to_have_count(200)
        page.click("#older-more")
        expect(older).to_have_count(230)
        expect(older.last).to_have_attribute("data-key", "task-old-0001")
        expect(page.locator("#older-more")).to_be_hidden()
        expect(page.locator("#older-summary")).to_have_text("230 shown")

        # A filter starts the walk again: the 23 failed ones, in one page.
        page.select_option("#older-status", "failed")
        page.click("#older-form button[type=submit]")
        expect(older).to_have_count(23)
        assert set(older.evaluate_all("rows => rows.map(r => r.dataset.status)")) == {"failed"}
        page.fill("#older-agent", "no-such-agent")
        page.click("#older-form button[type=submit]")
        expect(older).to_have_count(0)
        expect(page.locator("#older-empty")).to_have_text("No tasks match.")

        # The same section in Chinese.
        page.select_option("#lang", "zh-CN")
        expect(page.locator("#older h2 [data-i18n]")).to_have_text("历史任务")
        expect(page.locator("#older-empty")).to_have_text("没有符合条件的任务。")
