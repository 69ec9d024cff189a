// The live stream: GET /api/manage/events is Server-Sent Events. EventSource cannot send
// an Authorization header, so the stream is read with fetch() and a ReadableStream
// reader. The hub sends a snapshot, then the current row of whatever changed.
import { refused, token } from "./api.js";

const MAX_RETRY_MS = 15000;

function sleep(ms, signal) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal?.addEventListener("abort", () => { clearTimeout(timer); resolve(); }, { once: true });
  });
}

// Follow the stream until ``signal`` aborts, reconnecting with a growing pause.
// ``setLive(kind, key)`` shows the connection's state (key: its text in the dictionaries); ``onEvent(name, data)`` gets events.
export async function follow(signal, onEvent, setLive) {
  let failures = 0;
  let stopped = false;
  while (!signal.aborted && token()) {
    setLive("connecting", failures ? "live.reconnecting" : "live.connecting");
    try {
      const response = await fetch("/api/manage/events", {
        headers: { Authorization: `Bearer ${token()}`, Accept: "text/event-stream" },
        cache: "no-store", signal,
      });
      if (response.status === 401) {
        refused();
        return;
      }
      if (!response.ok || !response.body) throw new Error(`HTTP ${response.status}`);
      await readEvents(response.body, (name, data) => {
        failures = 0;
        if (name === "snapshot") setLive("live", "live.live");
        if (name === "shutdown") { stopped = true; setLive("off", "live.stopped"); }
        onEvent(name, data);
      });
    } catch {
      if (signal.aborted) return;
    }
    failures += 1;
    if (!stopped) setLive("off", "live.off");
    await sleep(Math.min(MAX_RETRY_MS, 500 * 2 ** Math.min(failures, 5)), signal);
  }
}

// Parse text/event-stream: events are separated by a blank line; "event:" names one,
// "data:" lines carry its JSON; lines starting with ":" are keep-alive comments.
export async function readEvents(body, handle) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let gap;
    while ((gap = /\r?\n\r?\n/.exec(buffer)) !== null) {
      const block = buffer.slice(0, gap.index);
      buffer = buffer.slice(gap.index + gap[0].length);
      let name = "message";
      const data = [];
      for (const line of block.split(/\r?\n/)) {
        if (line.startsWith(":")) continue;
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        const text = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (field === "event") name = text;
        else if (field === "data") data.push(text);
      }
      if (data.length) handle(name, JSON.parse(data.join("\n")));
    }
  }
}
