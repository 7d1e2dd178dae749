#!/usr/bin/env python3
"""Fills a running Roost with the objects of "a year of use", through the
public HTTP API the way clients write them:

- counters (`counter/c-N`, incremented 1-3 times),
- counters with an alarm far ahead (`counter/a-N`, `increment_later` 200 days),
- rooms (`room/r-N`: a far follow-up, then 1-3 messages: an alarm each),
- Yjs documents (`ydoc/d-N`, 1-5 updates), and `--long-docs` documents
  (`ydoc/long-N`) of `--long-updates` updates each.

    loadtest/age-datadir.py --url http://127.0.0.1:PORT --objects 100000

Every loop is bounded (`--objects`, `--max-seconds`). Prints the objects
written per second. Standard library only.
"""
import argparse, http.client, json, sys, threading, time, urllib.parse


def varuint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def yjs_update(client, clock, text="a"):
    """A Yjs v1 update inserting `text` (one char) at the end of the
    document's text `t`, after the same client's previous character."""
    s = text.encode()
    head = varuint(1) + varuint(1) + varuint(client) + varuint(clock)
    if clock == 0:
        item = bytes([0x04]) + varuint(1) + varuint(1) + b"t"
    else:
        item = bytes([0x84]) + varuint(client) + varuint(clock - 1)
    return head + item + varuint(len(s)) + s + varuint(0)


def plan(n, long_docs, long_updates):
    """(kind, index) of every object, spread so each kind is written all along."""
    jobs = []
    for i in range(n):
        r = i % 20
        if r < 13:
            jobs.append(("counter", i))
        elif r < 14:
            jobs.append(("alarm", i))
        elif r < 17:
            jobs.append(("room", i))
        else:
            jobs.append(("ydoc", i))
    for d in range(long_docs):
        jobs.insert(d * max(1, len(jobs) // max(1, long_docs)), ("long", d))
    return jobs


class Client:
    def __init__(self, host, port, token):
        self.host, self.port, self.token = host, port, token
        self.conn = None

    def post(self, path, body, ctype="application/json"):
        for attempt in range(5):
            try:
                if self.conn is None:
                    self.conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
                headers = {"content-type": ctype}
                self.conn.request("POST", path, body=body, headers=headers)
                resp = self.conn.getresponse()
                data = resp.read()
                if resp.status == 503 and attempt < 4:
                    time.sleep(0.05 * (attempt + 1))
                    continue
                if resp.status >= 300:
                    raise RuntimeError(f"{path}: HTTP {resp.status} {data[:200]!r}")
                return data
            except (OSError, http.client.HTTPException):
                self.conn = None
                if attempt == 4:
                    raise
                time.sleep(0.1)


def write(c, kind, i, long_updates):
    call = lambda cls, name, method, args: c.post(
        f"/v1/objects/{cls}/{name}/call/{method}", json.dumps(args))
    if kind == "counter":
        for _ in range(1 + i % 3):
            call("counter", f"c-{i}", "increment", {"by": 1})
    elif kind == "alarm":
        call("counter", f"a-{i}", "increment", {"by": 1})
        call("counter", f"a-{i}", "increment_later", {"by": 1, "delay_ms": 200 * 86_400_000})
    elif kind == "room":
        call("room", f"r-{i}", "followup", {"after_ms": 300 * 86_400_000, "text": "still there?"})
        for m in range(1 + i % 3):
            call("room", f"r-{i}", "send", {"name": "ann", "text": f"message {m} of room {i}"})
    elif kind == "ydoc":
        for clock in range(1 + i % 5):
            c.post(f"/v1/yjs/d-{i}/update", yjs_update(1000 + i, clock), "application/octet-stream")
    elif kind == "long":
        for clock in range(long_updates):
            c.post(f"/v1/yjs/long-{i}/update", yjs_update(7, clock, "abcdefgh"[clock % 8]),
                   "application/octet-stream")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", required=True)
    p.add_argument("--objects", type=int, default=100_000)
    p.add_argument("--start", type=int, default=0, help="first index (to grow an existing directory)")
    p.add_argument("--long-docs", type=int, default=20)
    p.add_argument("--long-updates", type=int, default=3000)
    p.add_argument("--threads", type=int, default=32)
    p.add_argument("--max-seconds", type=float, default=1800)
    a = p.parse_args()
    u = urllib.parse.urlparse(a.url)
    jobs = [(k, i + a.start if k != "long" else i) for k, i in plan(a.objects, a.long_docs, a.long_updates)]
    lock = threading.Lock()
    state = {"next": 0, "done": 0, "errors": 0}
    deadline = time.time() + a.max_seconds
    t0 = time.time()

    def worker():
        c = Client(u.hostname, u.port, None)
        while time.time() < deadline:
            with lock:
                j = state["next"]
                if j >= len(jobs):
                    return
                state["next"] = j + 1
            try:
                write(c, jobs[j][0], jobs[j][1], a.long_updates)
                with lock:
                    state["done"] += 1
            except Exception as e:  # noqa: BLE001 - counted and reported
                with lock:
                    state["errors"] += 1
                    if state["errors"] <= 5:
                        print("error:", e, file=sys.stderr)

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(a.threads)]
    for t in threads:
        t.start()
    last = 0
    while any(t.is_alive() for t in threads):
        time.sleep(1)
        if time.time() - last >= 15:
            last = time.time()
            print(f"{state['done']}/{len(jobs)} objects, {state['errors']} errors, "
                  f"{time.time() - t0:.0f}s", file=sys.stderr, flush=True)
    for t in threads:
        t.join(timeout=1)
    secs = time.time() - t0
    print(json.dumps({"objects": state["done"], "errors": state["errors"], "seconds": round(secs, 1),
                      "objects_per_s": round(state["done"] / secs, 1)}))
    sys.exit(1 if state["errors"] or state["done"] < len(jobs) else 0)


if __name__ == "__main__":
    main()
