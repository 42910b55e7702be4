"""Merchant configurations (dicts, as the schema reads them) written as MERCHANTS_TOML text, for
stacks run with many merchants (the fairness benchmark, the isolation tests)."""
from __future__ import annotations

import json


def merchants_toml(merchants: list[dict]) -> str:
    """The few value types a merchant's configuration uses, as TOML (JSON strings are TOML's)."""
    out = []
    for m in merchants:
        out.append("[[merchants]]")
        tables = {k: v for k, v in m.items() if isinstance(v, dict)}
        out += [f"{k} = {json.dumps(v)}" for k, v in m.items() if k not in tables]
        for name, table in tables.items():
            out.append(f"[merchants.{name}]")
            out += [f"{json.dumps(k)} = {json.dumps(v)}" for k, v in table.items()]
    return "\n".join(out) + "\n"
