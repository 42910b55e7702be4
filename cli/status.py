"""`rlm-loop status`: one return's record (integration.store.status.return_view) as text."""
from __future__ import annotations

from integration.workflow.rules import label


def describe(view: dict) -> str:
    decision = view["decision"] or {}
    rows = [
        ("return", f"{view['loop_return_id']} (merchant {view['merchant']}, order {view['order_name'] or '-'})"),
        ("state", f"{view['state']}   (Loop: {view['loop_state'] or '-'})"),
        ("RMA", str(view["rma_number"] or "-")),
        ("decision", decision.get("action") or "-"),
        ("rules fired", ", ".join(decision.get("rules_fired") or []) or "-"),
        ("reasons", "; ".join(decision.get("reasons") or []) or "-"),
        ("Loop note", decision.get("loop_note") or "-"),
        *([("shadow", _shadow(view["shadow"]))] if view.get("shadow") else []),
        ("attention", view["attention_reason"] or "-"),
        ("waiting", _waiting(view.get("waiting"))),
        ("RMA lines", ", ".join(f"{line.get('qty_authorized')} x {label(line)}"
                                for line in view["rma_lines"]) or "-"),
        ("receipts", ", ".join(f"#{r['receipt_number']} ({len(r['lines'])} lines, {r['received_at']})"
                               for r in view["receipts"]) or "-"),
    ]
    out = [f"{name:<12} {value}" for name, value in rows]
    out.append("timeline")
    for t in view["timeline"]:
        move = t["to"] if t["from"] in (None, t["to"]) else f"{t['from']} -> {t['to']}"
        detail = f"  ({t['detail']})" if t["detail"] else ""
        out.append(f"  {t['at'][:19]}  {move:<34} {t['cause']}{detail}")
    return "\n".join(out)


def _shadow(shadow: dict) -> str:
    person = shadow["person_action"] or "no person has acted in Loop yet"
    return f"decided in shadow mode (not sent to Loop); person in Loop: {person}"


def _waiting(waiting: dict | None) -> str:
    if not waiting:
        return "-"
    return waiting["text"]
