"""What the benchmarks share: results, percentiles, the machine, /proc readings, and a
database full of open returns."""
from __future__ import annotations

import os
import platform
import subprocess
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Row:
    """One line of the summary table."""

    benchmark: str
    measured: str
    baseline: str
    ratio: str
    target: str
    met: bool | None  # None: informational, no target of its own


@dataclass
class Result:
    name: str
    rows: list[Row] = field(default_factory=list)
    details: list[str] = field(default_factory=list)  # markdown lines for the benchmark's section
    notes: list[str] = field(default_factory=list)  # what a missed target means and why
    elapsed_s: float = 0.0
    error: str | None = None
    extra: dict = field(default_factory=dict)  # raw figures, for the JSON report
    run: dict = field(default_factory=dict)  # how, when and where it was measured (bench/figures.py)


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-q * len(ordered) // 100))))
    return ordered[rank - 1]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def machine() -> dict[str, str]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    load = ""
    try:
        load = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        pass
    return {"cpus": str(os.cpu_count()), "cpu_model": model or platform.processor(), "memory": mem,
            "os": f"{platform.system()} {platform.release()}", "python": platform.python_version(),
            "load_avg": load}


# --- /proc ---------------------------------------------------------------------------------------
def proc_status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak resident set) of a process in KiB; {} once it is gone."""
    out: dict[str, int] = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0])
    except (OSError, ValueError):
        return {}
    return out


def proc_pss_kib(pid: int) -> int:
    """Proportional set size: resident memory with pages shared between processes (a forked
    pool's copy-on-write pages) split among them, so it adds up across a worker's processes."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (not its children) from /proc/<pid>/stat."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def tree_cpu_seconds(pid: int) -> float:
    """CPU time of a process, its reaped children (a recycled pool process) and its live children."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    own = sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")  # utime stime cutime cstime
    return own + sum(cpu_seconds(child) for child in children(pid))


# --- a database with many open returns --------------------------------------------------------
RMA_START = 100_000


def open_return_rows(count: int, first: int = 0, merchant: str = "demo",
                     state: str = "transmitted", now: datetime | None = None) -> list[dict]:
    """Returns number `first`.. `first + count - 1` waiting for goods, as `create_rma` and
    `transmit_rma` leave them: an RA of two lines (2 + 1 units), transmitted, expiring in 30
    days (and due for the sweeper then). Return n has RMA number RMA_START + n."""
    now = now or datetime.now(UTC)
    rows = []
    for n in range(first, first + count):
        rma = RMA_START + n
        units = [{"line_item_id": str(n * 10 + i), "sku": sku, "barcode": upc, "price": "88.00",
                  "discount": "0.00", "return_reason": "Too small", "parent_return_reason": None,
                  "title": sku}
                 for i, (sku, upc) in enumerate((("CB11D10-BLUE-S", "099999000054"),
                                                 ("CB11D10-BLUE-S", "099999000054"),
                                                 ("CB11D10-BLUE-M", "099999000055")))]
        lines = [{"line_number": 1, "sku_number": 4, "style_number": "CB11D10", "color": "BLUE",
                  "size": "S", "upc": "099999000054", "qty_authorized": 2, "unit_price": "88.00",
                  "external_line_refs": [str(n * 10), str(n * 10 + 1)]},
                 {"line_number": 2, "sku_number": 4, "style_number": "CB11D10", "color": "BLUE",
                  "size": "M", "upc": "099999000055", "qty_authorized": 1, "unit_price": "88.00",
                  "external_line_refs": [str(n * 10 + 2)]}]
        rows.append({
            "merchant": merchant, "loop_return_id": str(9_000_000 + n), "state": state,
            "loop_state": "open", "loop_updated_at": now.isoformat(), "order_name": f"#{50000 + n}",
            "currency": "USD", "total": "264.00", "loop_created_at": now.isoformat(),
            "units": units, "ship_from": None, "rma_number": rma, "rma_status": "TRANSMITTED",
            "rma_lines": lines, "transmitted_at": now, "first_receipt_at": None,
            "expires_at": now + timedelta(days=30), "decision": None, "decision_detail": None,
            "loop_note": None, "loop_action_claimed_at": None, "loop_actioned_at": None,
            "attention_reason": None, "attention_step": None, "step_attempts": 0,
            # Its explicit schedule, as decide leaves it: look again when the RA expires.
            "waiting_for": "goods", "next_attempt_at": now + timedelta(days=30),
            "created_at": now, "updated_at": now, "version": 1,
        })
    return rows


def fill_open_returns(database_url: str, count: int, **kwargs) -> float:
    """Bulk-insert `count` open returns (in batches, one transaction each); seconds taken."""
    from sqlalchemy import insert

    from integration.store.db import get_engine
    from integration.store.models import Return

    started = time.monotonic()
    engine = get_engine(database_url)
    batch = 5000
    for first in range(0, count, batch):
        rows = open_return_rows(min(batch, count - first), first, **kwargs)
        with engine.begin() as conn:
            conn.execute(insert(Return), rows)
    return time.monotonic() - started


def epoch_s(value) -> float:
    """A timestamp from our database (ISO text or datetime; SQLite hands back naive UTC) in
    seconds since the epoch."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.timestamp()
