"""The load generator of the receiver benchmark, run in processes of its own.

`python -m bench.loadgen SPEC.json` reads a spec, builds every request body first (distinct
`return.created` payloads, each signed with the merchant's webhook secret), then sends them
over keep-alive HTTP/1.1 connections (`http.client`, one per thread) and prints one JSON
result line: per-request latencies, statuses, errors and the process's own CPU time. Once its
bodies are built it prints `ready` and waits for a line on stdin before it starts, so that the
processes of one run send over the same window (bench/receiver.py starts them together).

Two modes:
- closed loop (`rate` unset): `concurrency` threads each send their next request as soon as
  the previous one is answered, which finds the server's maximum rate;
- open loop (`rate` set): requests are due at a fixed pace, `i / rate` seconds after the start,
  whoever is free sends the next due one, and latency counts from when it was due, so a server
  that falls behind is charged for the queueing it causes (no coordinated omission).
"""
from __future__ import annotations

import http.client
import json
import sys
import threading
import time
from pathlib import Path

from integration.loop.signature import sign

FIXTURE = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "loop" / "return__created.json"


def bodies(count: int, id_start: int, secret: str) -> list[tuple[bytes, str]]:
    """`count` distinct, signed `return.created` deliveries, in Loop's wire format."""
    template = json.loads(FIXTURE.read_text())
    out = []
    for n in range(id_start, id_start + count):
        payload = dict(template)
        payload["id"] = str(n)
        payload["order_name"] = f"#B{n}"
        payload["line_items"] = [{**item, "line_item_id": n * 10 + i}
                                 for i, item in enumerate(template["line_items"])]
        # Loop sends compact JSON with `/` escaped; the signature covers those exact bytes.
        raw = json.dumps(payload, separators=(",", ":")).replace("/", "\\/").encode()
        out.append((raw, sign(secret, raw)))
    return out


class Run:
    def __init__(self, spec: dict, work: list[tuple[bytes, str]]):
        self.spec = spec
        self.work = work
        self.lock = threading.Lock()
        self.next = 0
        self.latencies: list[float] = []
        self.statuses: dict[str, int] = {}
        self.errors: dict[str, int] = {}
        self.answered: dict[str, int] = {}  # every answer, warm-up included
        self.exhausted = False

    def take(self) -> int | None:
        with self.lock:
            if self.next >= len(self.work):
                self.exhausted = True
                return None
            i = self.next
            self.next += 1
            return i

    def worker(self, start: float, stop: float, rate: float | None) -> None:
        spec = self.spec
        conn = http.client.HTTPConnection(spec["host"], spec["port"], timeout=30)
        headers_base = {"Content-Type": "application/json", "Connection": "keep-alive"}
        lat, statuses, errors, answered = [], {}, {}, {}
        while True:
            i = self.take()
            if i is None:
                break
            due = start + i / rate if rate else None
            now = time.perf_counter()
            if due is not None:
                if due >= stop:
                    break
                if due > now:
                    time.sleep(due - now)
            elif now >= stop:
                break
            body, signature = self.work[i]
            sent = time.perf_counter()
            try:
                conn.request("POST", spec["path"], body=body,
                             headers={**headers_base, "X-Loop-Signature": signature})
                response = conn.getresponse()
                response.read()
                status = str(response.status)
            except (OSError, http.client.HTTPException) as exc:
                errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                conn.close()
                conn = http.client.HTTPConnection(spec["host"], spec["port"], timeout=30)
                continue
            done = time.perf_counter()
            answered[status] = answered.get(status, 0) + 1
            if done - start >= spec.get("warmup_s", 0.0):
                lat.append(done - (due if due is not None else sent))
                statuses[status] = statuses.get(status, 0) + 1
        conn.close()
        with self.lock:
            self.latencies += lat
            for k, v in statuses.items():
                self.statuses[k] = self.statuses.get(k, 0) + v
            for k, v in errors.items():
                self.errors[k] = self.errors.get(k, 0) + v
            for k, v in answered.items():
                self.answered[k] = self.answered.get(k, 0) + v


def run(spec: dict, ready=lambda: None) -> dict:
    work = bodies(spec["count"], spec["id_start"], spec["secret"])
    ready()  # returns when every process of the run is ready too
    run = Run(spec, work)
    rate = spec.get("rate")
    cpu0 = time.process_time()
    start = time.perf_counter() + 0.2
    stop = start + spec["duration_s"]
    threads = [threading.Thread(target=run.worker, args=(start, stop, rate), daemon=True)
               for _ in range(spec["concurrency"])]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    return {
        "latencies": run.latencies,
        "statuses": run.statuses,
        "errors": run.errors,
        "answered": run.answered,
        "measured_s": elapsed - spec.get("warmup_s", 0.0),
        "sent": run.next,
        "exhausted": run.exhausted,
        "cpu_s": time.process_time() - cpu0,
    }


def main() -> None:
    spec = json.loads(Path(sys.argv[1]).read_text())

    def ready() -> None:
        print("ready", flush=True)
        sys.stdin.readline()

    print(json.dumps(run(spec, ready)), flush=True)


if __name__ == "__main__":
    main()
