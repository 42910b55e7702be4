"""`make demo`: drive sample returns through the whole real stack and check every outcome.

Each sample return is created in the Loop sandbox (which fires `return.created` at our real
receiver), the simulated 3PL receives its package in the RLM sandbox by scenario, and the demo
watches the service's own API until each return settles. An outcome counts as matched only if
our record AND both sandboxes agree (one RA in RLM, one Loop action, the Loop state).
"""
from __future__ import annotations

import itertools
import json
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

from .processes import Stack

RLM_AUTH = ("demo", "demo-rlm-key")


@dataclass(frozen=True)
class Scenario:
    name: str
    expected: str  # processed | flagged | cancelled | needs_attention
    receipts: tuple[str, ...] = ()  # RLM sandbox 3PL scenarios, in order
    cancel_in_loop: bool = False
    unknown_sku: bool = False


SCENARIOS = [
    Scenario("exact", "processed", ("exact",)),
    Scenario("partial_then_complete", "processed", ("partial", "remainder")),
    Scenario("missing_after_grace", "flagged", ("partial",)),
    Scenario("damaged", "flagged", ("damaged",)),
    Scenario("wrong_item", "flagged", ("wrong_item",)),
    Scenario("over_received", "flagged", ("over",)),
    Scenario("cancelled_before_receipt", "cancelled", cancel_in_loop=True),
    Scenario("unknown_sku", "needs_attention", unknown_sku=True),
]
SETTLED = {"complete", "cancelled", "needs_attention"}


@dataclass
class Tracked:
    scenario: Scenario
    loop_id: str
    receipts_done: int = 0
    cancelled: bool = False
    view: dict = field(default_factory=dict)

    @property
    def state(self) -> str:
        return self.view.get("state", "(not yet seen)")


class Demo:
    def __init__(self, stack: Stack, out=sys.stdout):
        self.stack = stack
        self.out = out
        self.http = requests.Session()
        self.items = self._catalog()

    # --- setting up returns --------------------------------------------------------------
    def _catalog(self) -> list[dict]:
        url = f"{self.stack.url('rlm')}/api/v1/companies/90/items"
        data = self.http.get(url, auth=RLM_AUTH, params={"limit_rows": 500}, timeout=10).json()["data"]
        skus = []
        # One division: RLM refuses an RA whose lines span divisions.
        for item in (i for i in data if i["division_number"] == data[0]["division_number"]):
            for sku in item["skus"]:
                skus.append({"sku": f"{item['style_number']}-{item['color']}-{sku['size']}",
                             "barcode": sku["upc"], "title": f"{item['style_name']} - {item['color']} / {sku['size']}"})
        return skus

    def create_return(self, n: int, scenario: Scenario) -> Tracked:
        a, b = self.items[n % len(self.items)], self.items[(n + 7) % len(self.items)]
        units = [a, a, b]  # two units of one SKU (one RA line, qty 2) and one of another
        if scenario.unknown_sku:
            units = [a, {"sku": f"NOSUCH-STYLE-{n}", "barcode": f"0000{n:08d}", "title": "Not in RLM"}]
        body = {
            "order_name": f"#{1000 + n}",
            "customer": f"shopper{n}@example.com",
            "address": {"name": f"Shopper Number{n}", "address1": f"{n} Demo Street", "city": "Brooklyn",
                        "state": "New York", "zip": 11201, "country_code": "US"},
            "line_items": [{**u, "price": "88.00", "return_reason": "Too small",
                            "parent_return_reason": "Didn't fit"} for u in units],
        }
        r = self.http.post(f"{self.stack.url('loop')}/_sim/returns", json=body, timeout=10)
        r.raise_for_status()
        return Tracked(scenario, str(r.json()["id"]))

    # --- driving them --------------------------------------------------------------------
    def refresh(self, t: Tracked) -> None:
        r = self.http.get(f"{self.stack.url('web')}/api/returns/{t.loop_id}",
                          headers=self.stack.admin_headers(), timeout=10)
        if r.status_code == 200:
            t.view = r.json()

    def nudge(self, t: Tracked) -> None:
        """Play the warehouse and the shopper: receive packages, cancel in Loop."""
        s = t.scenario
        if s.cancel_in_loop and not t.cancelled and t.state == "transmitted":
            self.http.post(f"{self.stack.url('loop')}/_sim/returns/{t.loop_id}/state",
                           json={"state": "cancelled"}, timeout=10).raise_for_status()
            t.cancelled = True
        if t.receipts_done >= len(s.receipts) or not t.view.get("rma_number"):
            return
        ready = "transmitted" if t.receipts_done == 0 else "partially_received"
        if t.state != ready:
            return
        url = (f"{self.stack.url('rlm')}/_sim/companies/90/return-authorizations/"
               f"{t.view['rma_number']}/receive")
        self.http.post(url, json={"scenario": s.receipts[t.receipts_done]}, timeout=10).raise_for_status()
        t.receipts_done += 1

    def run(self, count: int, timeout: float) -> list[dict]:
        tracked = [self.create_return(n, s) for n, s in zip(range(count), itertools.cycle(SCENARIOS))]
        self._print(f"created {len(tracked)} returns in the Loop sandbox; waiting for the workflow")
        deadline = time.monotonic() + timeout
        last_progress = 0.0
        while time.monotonic() < deadline:
            for t in tracked:
                if t.state not in SETTLED:
                    self.refresh(t)
                    self.nudge(t)
            if all(t.state in SETTLED for t in tracked):
                break
            if time.monotonic() - last_progress > 3:
                self._progress(tracked)
                last_progress = time.monotonic()
            time.sleep(0.5)
        self._progress(tracked)
        return [self.outcome(t) for t in tracked]

    # --- checking outcomes ---------------------------------------------------------------
    def outcome(self, t: Tracked) -> dict:
        loop = self.http.get(f"{self.stack.url('loop')}/_sim/returns/{t.loop_id}", timeout=10).json()
        rlm_stats = self.http.get(f"{self.stack.url('rlm')}/_sim/stats", timeout=10).json()
        ras = rlm_stats["ras_per_external_ref"].get("90", {}).get(t.loop_id, 0)
        ok_actions = [a["action"] for a in loop.get("actions", []) if a.get("ok")]
        actual = self._actual(t)
        problems = []
        if actual == "processed" and (ok_actions.count("process") != 1 or ras != 1):
            problems.append(f"loop process calls={ok_actions.count('process')}, RAs={ras}")
        if actual == "flagged" and (ok_actions.count("flag") != 1 or not loop.get("notes") or ras != 1):
            problems.append(f"loop flag calls={ok_actions.count('flag')}, notes={len(loop.get('notes') or [])}")
        if actual in ("processed", "flagged") and ok_actions.count("process") + ok_actions.count("flag") != 1:
            problems.append("more than one Loop action")
        if actual == "cancelled" and ras > 1:
            problems.append(f"RAs={ras}")
        if actual == "needs_attention" and ras:
            problems.append(f"an RA exists ({ras}) although the SKU is unknown")
        decision = t.view.get("decision") or {}
        return {
            "loop_return_id": t.loop_id,
            "scenario": t.scenario.name,
            "expected": t.scenario.expected,
            "actual": actual + (f" ({'; '.join(problems)})" if problems else ""),
            "matched": actual == t.scenario.expected and not problems,
            "state": t.state,
            "rma_number": t.view.get("rma_number"),
            "loop_state": loop.get("state"),
            "reasons": decision.get("reasons") or ([t.view["attention_reason"]] if t.view.get("attention_reason") else []),
            "loop_note": decision.get("loop_note"),
        }

    @staticmethod
    def _actual(t: Tracked) -> str:
        if t.state == "complete":
            action = (t.view.get("decision") or {}).get("action")
            return {"process": "processed", "flag": "flagged"}.get(action, f"complete/{action}")
        return t.state

    # --- output --------------------------------------------------------------------------
    def _print(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def _progress(self, tracked: list[Tracked]) -> None:
        counts: dict[str, int] = {}
        for t in tracked:
            counts[t.state] = counts.get(t.state, 0) + 1
        self._print("  " + ", ".join(f"{k}: {v}" for k, v in sorted(counts.items())))


def print_table(rows: list[dict], out=sys.stdout) -> None:
    cols = ("scenario", "expected", "actual", "rma_number", "state")
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in cols}
    print("  ".join(c.upper().ljust(widths[c]) for c in cols), file=out)
    for r in rows:
        print("  ".join(str(r[c]).ljust(widths[c]) for c in cols), file=out)


def report(rows: list[dict], elapsed: float) -> dict:
    return {
        "summary": {"total": len(rows), "matched": sum(r["matched"] for r in rows),
                    "elapsed_s": round(elapsed, 1)},
        "returns": rows,
    }


def run_demo(count: int = len(SCENARIOS), report_path: str | None = None, workdir: str | None = None,
             timeout: float | None = None, out=sys.stdout) -> dict:
    started = time.monotonic()
    base = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="rlm-loop-demo-"))
    print(f"starting the stack in {base} (logs in {base / 'logs'})", file=out, flush=True)
    # The grace period for partial receipts is shortened for the demo, but under a large batch
    # the warehouse (this driver) needs longer to send the rest of a package.
    grace = str(max(10.0, 0.15 * count))
    with Stack(base, extra_env={"PARTIAL_GRACE_S": grace}) as stack:
        rows = Demo(stack, out).run(count, timeout or 120 + count * 1.0)
    result = report(rows, time.monotonic() - started)
    print_table(rows, out)
    s = result["summary"]
    print(f"\n{s['matched']}/{s['total']} returns matched their expected outcome in {s['elapsed_s']} s",
          file=out, flush=True)
    if report_path:
        Path(report_path).write_text(json.dumps(result, indent=2))
        print(f"report written to {report_path}", file=out)
    return result
