#!/usr/bin/env python3
"""Alarm benchmark: N counter objects each set an alarm (increment_later) that
falls due at the same moment; measures how fast they fire and how late, then
restarts the server to measure start-up time and memory with N pending alarms.

    loadtest/bench-alarms.py --roost target/release/roost --alarms 10000

Starts its own `roost serve` on a free loopback port with a temp data dir and
stops it by PID. Every loop is bounded. Standard library only.
"""
import argparse, http.client, json, os, re, shutil, signal, socket, subprocess, sys, tempfile, threading, time


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(roost, data, port):
    t0 = time.time()
    proc = subprocess.Popen([roost, "serve", "--listen", f"127.0.0.1:{port}", "--data", data, "--idle-timeout", "2s"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(600):
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            c.request("GET", "/healthz")
            if c.getresponse().status == 200:
                return proc, time.time() - t0
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("roost did not start")


def metrics(port):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request("GET", "/metrics")
    text = c.getresponse().read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        name, _, value = line.rpartition(" ")
        out[name] = float(value)
    return out


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def quantile(m, q):
    """Upper bound of the bucket holding quantile q of roost_alarm_lateness_seconds."""
    total = m.get("roost_alarm_lateness_seconds_count", 0)
    if not total:
        return None
    buckets = sorted((float(re.search(r'le="([^"]+)"', k).group(1)), v) for k, v in m.items()
                     if k.startswith("roost_alarm_lateness_seconds_bucket") and "+Inf" not in k)
    for le, count in buckets:
        if count >= q * total:
            return le
    return float("inf")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--roost", default="target/release/roost")
    ap.add_argument("--alarms", type=int, default=10000)
    ap.add_argument("--threads", type=int, default=16)
    ap.add_argument("--lead", type=float, default=0, help="seconds between the last set and the due time (default: auto)")
    ap.add_argument("--startup-only", action="store_true", help="only set N far-future alarms, restart, and measure start-up")
    args = ap.parse_args()
    data = tempfile.mkdtemp(prefix="roost-alarms-")
    port = free_port()
    proc, _ = start(args.roost, data, port)
    if args.startup_only:
        try:
            proc = startup_phase(args, proc, data, port, args.alarms, args.threads, {"alarms": args.alarms})
        finally:
            proc.kill()
            proc.wait()
            shutil.rmtree(data, ignore_errors=True)
        return
    try:
        n, k = args.alarms, args.threads
        result = {"alarms": n}
        if args.startup_only:
            return startup_phase(args, proc, data, port, n, k, result)
        # All alarms fall due at one wall-clock moment, after every set is done.
        est = max(10.0, n / 800.0)
        due_at = time.time() + (args.lead or est)
        errors = []

        def setter(i0):
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            for i in range(i0, n, k):
                delay = max(0, int((due_at - time.time()) * 1000))
                body = json.dumps({"by": 1, "delay_ms": delay})
                c.request("POST", f"/v1/objects/counter/alarm-{i}/call/increment_later", body)
                r = c.getresponse()
                r.read()
                if r.status != 200:
                    errors.append(r.status)
        t0 = time.time()
        ts = [threading.Thread(target=setter, args=(i,)) for i in range(k)]
        [t.start() for t in ts]
        [t.join() for t in ts]
        set_secs = time.time() - t0
        if errors:
            raise SystemExit(f"{len(errors)} increment_later calls failed: {errors[:5]}")
        if time.time() > due_at:
            raise SystemExit(f"setting {n} alarms took {set_secs:.1f}s, past the due time; use --lead")
        time.sleep(max(0, due_at - time.time()))
        t_due = time.time()
        fired = 0
        t_last = None
        for _ in range(3000):  # bounded: up to ~300 s
            fired = metrics(port).get("roost_alarms_fired_total", 0)
            if fired >= n:
                t_last = time.time()
                break
            time.sleep(0.1)
        m = metrics(port)
        span = (t_last or time.time()) - t_due
        result = {
            "alarms": n,
            "set_seconds": round(set_secs, 2),
            "fired": int(fired),
            "seconds_from_due_to_all_fired": round(span, 2),
            "fired_per_s": round(n / span, 1) if span > 0 else None,
            "lateness_p50_s_le": quantile(m, 0.5),
            "lateness_p99_s_le": quantile(m, 0.99),
            "lateness_mean_s": round(m.get("roost_alarm_lateness_seconds_sum", 0) / max(1, m.get("roost_alarm_lateness_seconds_count", 1)), 4),
        }
        proc = startup_phase(args, proc, data, port, n, k, result)
    finally:
        proc.kill()
        proc.wait()
        shutil.rmtree(data, ignore_errors=True)


def startup_phase(args, proc, data, port, n, k, result):
    """Sets N alarms an hour ahead, restarts the server, times start-up."""
    if True:
        t0 = time.time()
        def rearm(i0):
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            for i in range(i0, n, k):
                c.request("POST", f"/v1/objects/counter/alarm-{i}/call/increment_later", json.dumps({"by": 1, "delay_ms": 3_600_000}))
                c.getresponse().read()
        ts = [threading.Thread(target=rearm, args=(i,)) for i in range(k)]
        [t.start() for t in ts]
        [t.join() for t in ts]
        result["set_far_alarms_seconds"] = round(time.time() - t0, 1)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=300)
        proc, startup = start(args.roost, data, port)
        time.sleep(1.0)
        result["pending_alarms_at_start"] = int(metrics(port).get("roost_alarms_dispatched_total", 0)) == 0 and n
        result["startup_seconds_to_healthz"] = round(startup, 3)
        result["rss_kib_after_start"] = rss_kib(proc.pid)
        print(json.dumps(result))
        return proc


if __name__ == "__main__":
    main()
