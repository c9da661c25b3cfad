#!/usr/bin/env python3
"""Bounded load client for the reset lab (runs inside the client namespace).

Reads a JSON plan: a list of steps, executed in order:
  {"sleep": S}
  {"method": "GET", "path": "/", "body_len": 0, "timeout": 10, "n": 1, "async": false}
n > 1 fires n concurrent requests; async=true does not wait for them.  Every request is
logged as a JSON line (start, end, status or error).  Hard cap: --max-seconds.
"""
import http.client
import json
import sys
import threading
import time

LOCK = threading.Lock()


def log(rec):
    with LOCK:
        sys.stdout.write(json.dumps(rec) + "\n")
        sys.stdout.flush()


def one(host, port, step, idx):
    t0 = time.time()
    rec = {"event": "request", "idx": idx, "method": step.get("method", "GET"),
           "path": step.get("path", "/"), "ts_start": round(t0, 6)}
    try:
        c = http.client.HTTPConnection(host, port, timeout=step.get("timeout", 10))
        body = b"b" * step.get("body_len", 0) if step.get("body_len") else None
        c.request(rec["method"], rec["path"], body=body, headers={"Connection": "close"})
        r = c.getresponse()
        data = r.read()
        rec.update(status=r.status, bytes=len(data))
        c.close()
    except Exception as e:  # noqa: BLE001 - every failure is logged, that is the point
        rec.update(status=None, error=f"{type(e).__name__}: {e}")
    rec["ts_end"] = round(time.time(), 6)
    log(rec)


def main():
    host, port, plan_file = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    max_seconds = float(sys.argv[4]) if len(sys.argv) > 4 else 120
    plan = json.load(open(plan_file))
    deadline = time.time() + max_seconds
    threads = []
    idx = 0
    for step in plan:
        if time.time() > deadline:
            log({"event": "deadline"})
            break
        if "sleep" in step:
            time.sleep(min(step["sleep"], max(0, deadline - time.time())))
            continue
        batch = []
        for _ in range(step.get("n", 1)):
            t = threading.Thread(target=one, args=(host, port, step, idx), daemon=True)
            idx += 1
            t.start()
            batch.append(t)
        if step.get("async"):
            threads.extend(batch)
        else:
            for t in batch:
                t.join(max(0, deadline - time.time()))
    for t in threads:
        t.join(max(0, deadline - time.time()))
    log({"event": "done", "requests": idx})


if __name__ == "__main__":
    main()
