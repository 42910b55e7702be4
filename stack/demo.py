"""`make demo`: drive sample returns through the whole real stack and check every outcome.

Each sample return is created in the Loop sandbox (which fires `return.created` at our real
receiver), the simulated 3PL receives its package in the RLM sandbox by scenario, a person in
Loop acts where the scenario says so, and the demo watches the service's own API until each
return settles. An outcome counts as matched only if our record AND both sandboxes agree (one
RA in RLM, the right number of Loop actions, the Loop state).
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

from integration.loop.signature import sign

from .processes import Stack

RLM_AUTH = ("demo", "demo-rlm-key")


@dataclass(frozen=True)
class Scenario:
    name: str
    expected: str  # processed | flagged | by_person | cancelled | needs_attention
    receipts: tuple[str, ...] = ()  # RLM sandbox 3PL scenarios, in order
    loop_admin: str | None = None  # what a person does in Loop: cancelled | closed | review
    loop_admin_when: str = "transmitted"  # ...once our return is in this state
    unknown_sku: bool = False
    processing_fails: bool = False  # Loop's background processing fails
    webhooks: str = "normal"  # normal | missed (never delivered) | shuffled (late, twice, out of order)
    reason: str = ""  # what the reasons/note must mention


SCENARIOS = [
    Scenario("exact", "processed", ("exact",)),
    Scenario("partial_then_complete", "processed", ("partial", "remainder")),
    Scenario("missing_after_grace", "flagged", ("partial",), reason="missing 1 x "),
    Scenario("damaged", "flagged", ("damaged",), reason="received damaged"),
    Scenario("wrong_item", "flagged", ("wrong_item",), reason="not on RMA"),
    Scenario("over_received", "flagged", ("over",), reason="over-received"),
    Scenario("cancelled_before_receipt", "cancelled", loop_admin="cancelled"),
    Scenario("unknown_sku", "needs_attention", unknown_sku=True, reason="SKU unknown to RLM: NOSUCH"),
    Scenario("nothing_received_by_expiry", "flagged", reason="nothing received by the RMA's expiry"),
    Scenario("cancelled_after_receipt", "needs_attention", ("partial",), loop_admin="cancelled",
             loop_admin_when="partially_received", reason="after goods were received"),
    Scenario("processed_by_person_in_loop", "by_person", loop_admin="closed"),
    Scenario("flagged_by_person_in_loop", "by_person", loop_admin="review"),
    Scenario("loop_processing_failed", "needs_attention", ("exact",), processing_fails=True,
             reason="Loop could not process"),
    Scenario("webhook_missed", "processed", ("exact",), webhooks="missed"),
    Scenario("webhooks_late_twice_out_of_order", "processed", ("exact",), webhooks="shuffled"),
]
SETTLED = {"complete", "cancelled", "needs_attention"}
ACTIONS_EXPECTED = {"processed": ["process"], "flagged": ["flag"], "by_person": [],
                    "cancelled": [], "needs_attention": None}


# What the Loop sandbox's /_sim/returns/<id> adds to the API view: not part of a webhook body.
SIM_ONLY_FIELDS = ("actions", "history", "notes", "process_data", "processing_pending", "removed_line_items")
NEXT_PARCEL_AFTER_S = 5.0  # well inside the shortest grace period the demo and chaos runs use
RLM_COMPANY = "90"


def _without_failed(actions: list[str], failed: int) -> list[str]:
    """Loop's accepted actions less the process calls its processing then failed (Loop reported
    `return.processing.failed`): after one, a retry rightly sends process again."""
    kept = []
    for action in actions:
        if action == "process" and failed:
            failed -= 1
            continue
        kept.append(action)
    return kept


def ras_for(rlm_stats: dict, loop_id: str, company: str = RLM_COMPANY) -> int:
    """RAs in the RLM sandbox for one Loop return, from its ledger (`GET /_sim/stats`).

    An RA's external_ref is the bare Loop return id, or one scoped by merchant
    (`"<merchant>:<loop return id>"`): both count.
    """
    refs = rlm_stats["ras_per_external_ref"].get(company, {})
    suffix = f":{loop_id}"
    return sum(n for ref, n in refs.items() if ref == loop_id or ref.endswith(suffix))


@dataclass
class Tracked:
    scenario: Scenario
    loop_id: str
    receipts_done: int = 0
    last_receipt_at: float = 0.0  # time.monotonic() when the warehouse last received a parcel
    admin_done: bool = False
    view: dict = field(default_factory=dict)

    @property
    def state(self) -> str:
        return self.view.get("state", "(not yet seen)")


class Demo:
    def __init__(self, stack: Stack, out=sys.stdout, scenarios: list[Scenario] | None = None):
        self.stack = stack
        self.out = out
        self.scenarios = scenarios or SCENARIOS
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

    def create_all(self, count: int) -> list[Tracked]:
        plan = list(zip(range(count), itertools.cycle(self.scenarios)))
        # Returns whose creation webhook must not come from Loop are created first, while that
        # subscription is switched off (the subscription API is the only switch Loop has).
        quiet = [(n, s) for n, s in plan if s.webhooks != "normal"]
        tracked = []
        if quiet:
            with self.created_webhook_off():
                tracked += [self.create_return(n, s) for n, s in quiet]
        tracked += [self.create_return(n, s) for n, s in plan if s.webhooks == "normal"]
        for t in tracked:
            if t.scenario.webhooks == "shuffled":
                self.send_shuffled(t)
        failing = [int(t.loop_id) for t in tracked if t.scenario.processing_fails]
        if failing:
            self.http.post(f"{self.stack.url('loop')}/_sim/config", json={"processing_fails": failing},
                           timeout=10).raise_for_status()
        return tracked

    def created_webhook_off(self):
        demo = self

        class Off:
            def __enter__(self):
                self.hooks = [h for h in demo._loop_api("GET", "/webhooks")["webhooks"]
                              if h["trigger"] == "return.created"]
                self._set("inactive")

            def __exit__(self, *exc):
                self._set("active")

            def _set(self, status):
                for h in self.hooks:
                    body = {**{k: h[k] for k in ("topic", "trigger", "url")}, "status": status}
                    demo._loop_api("PUT", f"/webhooks/{h['id']}", json=body)

        return Off()

    def _loop_api(self, method: str, path: str, **kwargs):
        r = self.http.request(method, f"{self.stack.url('loop')}/api/v1{path}", timeout=10,
                              headers={"X-Authorization": self.stack.env.get("LOOP_API_KEY", "demo-loop-key")},
                              **kwargs)
        r.raise_for_status()
        return r.json() if r.content else None

    def send_shuffled(self, t: Tracked) -> None:
        """What a flaky network does to Loop's deliveries: an update first, the creation twice."""
        record = self.http.get(f"{self.stack.url('loop')}/_sim/returns/{t.loop_id}", timeout=10).json()
        webhook = {k: v for k, v in record.items() if k not in SIM_ONLY_FIELDS}
        secret = self.stack.env["LOOP_WEBHOOK_SECRET"]
        url = f"{self.stack.url('web')}/webhooks/loop/demo"
        for trigger in ("return.updated", "return.created", "return.created"):
            body = json.dumps({"topic": "return", "trigger": trigger, **webhook},
                              separators=(",", ":")).replace("/", "\\/").encode()
            self.http.post(url, data=body, timeout=10, headers={
                "Content-Type": "application/json", "X-Loop-Signature": sign(secret, body)})

    # --- driving them --------------------------------------------------------------------
    def refresh(self, t: Tracked) -> None:
        try:
            r = self.http.get(f"{self.stack.url('web')}/api/returns/{t.loop_id}",
                              headers=self.stack.admin_headers(), timeout=10)
        except requests.RequestException:
            return  # the receiver is restarting (chaos): look again next round
        if r.status_code == 200:
            t.view = r.json()

    def nudge(self, t: Tracked) -> None:
        """Play the warehouse and the people in Loop: receive packages, cancel, close, flag."""
        s = t.scenario
        receipts_left = t.receipts_done < len(s.receipts)
        if s.loop_admin and not t.admin_done and t.state == s.loop_admin_when \
                and (t.receipts_done or s.loop_admin_when == "transmitted"):
            self.http.post(f"{self.stack.url('loop')}/_sim/returns/{t.loop_id}/state",
                           json={"state": s.loop_admin}, timeout=10).raise_for_status()
            t.admin_done = True
            return
        if not receipts_left or not t.view.get("rma_number"):
            return
        if t.receipts_done == 0:
            if t.state != "transmitted":
                return
        # The warehouse's next parcel comes once we have seen the last one, or a few seconds
        # after it anyway: a real warehouse does not wait for us, and a slow decision must not
        # push the parcel past the grace period the scenario expects it within.
        elif t.state != "partially_received" and time.monotonic() - t.last_receipt_at < NEXT_PARCEL_AFTER_S:
            return
        url = (f"{self.stack.url('rlm')}/_sim/companies/90/return-authorizations/"
               f"{t.view['rma_number']}/receive")
        self.http.post(url, json={"scenario": s.receipts[t.receipts_done]}, timeout=10).raise_for_status()
        t.receipts_done += 1
        t.last_receipt_at = time.monotonic()

    def run(self, count: int, timeout: float) -> list[dict]:
        tracked = self.create_all(count)
        self._print(f"created {len(tracked)} returns in the Loop sandbox; waiting for the workflow")
        self.drive(tracked, timeout)
        return [self.outcome(t) for t in tracked]

    def drive(self, tracked: list[Tracked], timeout: float) -> None:
        """Follow every return, playing the warehouse and Loop's users, until all settle."""
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

    # --- checking outcomes ---------------------------------------------------------------
    def outcome(self, t: Tracked) -> dict:
        loop = self.http.get(f"{self.stack.url('loop')}/_sim/returns/{t.loop_id}", timeout=10).json()
        rlm_stats = self.http.get(f"{self.stack.url('rlm')}/_sim/stats", timeout=10).json()
        ras = ras_for(rlm_stats, t.loop_id)
        accepted = [a["action"] for a in loop.get("actions", []) if a.get("ok") and a["action"] in ("process", "flag")]
        ours = _without_failed(accepted, loop.get("processing_failed", 0))
        actual = self._actual(t)
        decision = t.view.get("decision") or {}
        reasons = decision.get("reasons") or []
        if t.view.get("attention_reason"):
            reasons = reasons + [t.view["attention_reason"]]
        problems = []
        wanted = ACTIONS_EXPECTED.get(actual)
        if wanted is not None and ours != wanted:
            problems.append(f"Loop actions {ours}")
        if len(ours) > 1:
            problems.append(f"{len(ours)} Loop actions")
        if ras > 1 or (actual in ("processed", "flagged", "by_person") and ras != 1):
            problems.append(f"{ras} RAs in RLM")
        if actual == "flagged" and not loop.get("notes"):
            problems.append("no Loop note")
        if t.scenario.reason and not any(t.scenario.reason in r for r in reasons):
            problems.append(f"no reason mentions {t.scenario.reason!r}")
        return {
            "loop_return_id": t.loop_id,
            "scenario": t.scenario.name,
            "expected": t.scenario.expected,
            "actual": actual + (f" ({'; '.join(problems)})" if problems else ""),
            "matched": actual == t.scenario.expected and not problems,
            "state": t.state,
            "rma_number": t.view.get("rma_number"),
            "loop_state": loop.get("state"),
            "reasons": reasons,
            "loop_note": decision.get("loop_note"),
        }

    @staticmethod
    def _actual(t: Tracked) -> str:
        if t.state == "complete":
            action = (t.view.get("decision") or {}).get("action")
            return {"process": "processed", "flag": "flagged", "by_person": "by_person"}.get(
                action, f"complete/{action}")
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


def demo_env(count: int) -> dict[str, str]:
    """Shortened clocks for the demo; a large batch gives the warehouse (this driver) longer."""
    return {
        "PARTIAL_GRACE_S": str(max(10.0, 0.15 * count)),
        "RMA_EXPIRY_DAYS": str(max(25.0, 0.3 * count) / 86400),
        "RECONCILE_INTERVAL_S": "8",
    }


def run_demo(count: int = len(SCENARIOS), report_path: str | None = None, workdir: str | None = None,
             timeout: float | None = None, out=sys.stdout, database: str = "sqlite") -> dict:
    started = time.monotonic()
    base = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="rlm-loop-demo-"))
    print(f"starting the stack in {base} (logs in {base / 'logs'})", file=out, flush=True)
    with Stack(base, extra_env=demo_env(count), database=database) as stack:
        print(f"database: {stack.database_label()}", file=out, flush=True)
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
