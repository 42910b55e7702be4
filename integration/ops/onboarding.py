"""Onboarding a merchant: prove each connection live (`check_merchant`), subscribe Loop's
webhooks topic by topic (`subscribe`), and bring in the returns already open in Loop (`backfill`).

Each returns a result object that the CLI (`rlm-loop merchants check|subscribe|backfill`) and the
/ops merchants page render, names the operator who asked (in its log line and its kept result,
integration/ops/onboarding_record.py), and carries no secret: reasons quote Loop's and RLM's
messages, base URLs, numbers and SKUs only. The verdicts are pure functions of what the calls
answered, so each case is decided in one place.
"""
from __future__ import annotations

import itertools
import logging
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum

from integration.errors import UpstreamError
from integration.loop.client import LoopClient
from integration.loop.webhooks import WEBHOOK_TRIGGERS
from integration.merchants import Merchant
from integration.ops import actions
from integration.rlm.client import RlmClient
from integration.workflow.context import Context
from integration.workflow.events import ingest_return
from integration.workflow.mapping import (
    UnitGroup,
    group_units,
    sku_candidates,
    split_sku,
    unit_from_loop,
)
from integration.workflow.rma import resolve_group

log = logging.getLogger(__name__)

SAMPLE_RETURNS = 5  # recent open Loop returns whose SKUs are looked up in RLM's catalog
SAMPLE_DAYS = 30
LOOP_TIME = "%Y-%m-%d %H:%M:%S"
REFUSED = (401, 403)  # Loop answers a wrong key and a key without the route's scope alike (401)


class Status(StrEnum):
    OK = "ok"
    FAILED = "failed"
    SKIPPED = "skipped"  # could not be tried: an earlier check failed, or nothing to try


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    detail: str  # why, in one sentence


@dataclass(frozen=True, kw_only=True)
class Report:
    """What one onboarding action found or did, item by item (checks, topics, returns)."""

    action: str  # check | subscribe | backfill
    merchant: str
    operator: str
    at: datetime
    items: tuple[Check, ...]
    summary: str = ""

    @property
    def ok(self) -> bool:
        return not any(item.status is Status.FAILED for item in self.items)

    @property
    def failed(self) -> list[Check]:
        return [item for item in self.items if item.status is Status.FAILED]


def describe(exc: UpstreamError) -> str:
    """An upstream error as a reason: the system's own message and the HTTP status."""
    if exc.status is None:
        return f"unreachable ({exc.message})"
    return f"{exc.message} (HTTP {exc.status})"


def _refused(exc: UpstreamError | None) -> bool:
    return exc is not None and exc.status in REFUSED


# --- check: Loop ---------------------------------------------------------------------------------
def loop_verdicts(base_url: str, returns_error: UpstreamError | None, webhooks_error: UpstreamError | None,
                  open_count: int, subscribed: str) -> list[Check]:
    """The Loop key and its two scopes, from how the returns list (Returns scope) and the
    webhooks list (Developer Tools scope) answered. Loop has no call that names a key's scopes:
    a 401 on one and not the other is the missing scope; a 401 on both, a wrong key."""
    if returns_error is None or webhooks_error is None:
        key = Check("Loop API key", Status.OK, f"accepted by {base_url}")
    elif _refused(returns_error) and _refused(webhooks_error):
        key = Check("Loop API key", Status.FAILED,
                    f"{base_url} refused it on every call ({describe(returns_error)}): a wrong key, "
                    "or one with neither the Returns nor the Developer Tools scope")
    else:
        first = returns_error if not _refused(returns_error) else webhooks_error
        key = Check("Loop API key", Status.FAILED, f"{base_url}: {describe(first)}")

    def scope(name: str, error: UpstreamError | None, what: str, works: str) -> Check:
        title = f"Loop scope {name}"
        if error is None:
            return Check(title, Status.OK, works)
        if key.status is Status.FAILED and (_refused(error) or error.status is None):
            return Check(title, Status.SKIPPED, "needs a key Loop accepts")
        if _refused(error):
            return Check(title, Status.FAILED, f"Loop refused {what} ({describe(error)}): the key "
                         f"lacks the {name} scope; add it to the key in Loop Admin > Developer Tools")
        return Check(title, Status.FAILED, f"{what}: {describe(error)}")

    return [key,
            scope("Returns", returns_error, "the returns list",
                  f"the returns list answers ({open_count} open returns sampled from the last "
                  f"{SAMPLE_DAYS} days)"),
            scope("Developer Tools", webhooks_error, "the webhooks list",
                  f"the webhooks list answers; {subscribed}")]


def subscriptions(hooks: list[dict], merchant_name: str) -> str:
    """Which of the webhooks we act on Loop sends to this merchant's route, active (any host:
    the check does not know the receiver's public URL)."""
    route = f"/webhooks/loop/{merchant_name}"
    active = {h.get("trigger") for h in hooks
              if h.get("status") == "active" and str(h.get("url", "")).endswith(route)}
    wanted = [t for triggers in WEBHOOK_TRIGGERS.values() for t in triggers]
    missing = [t for t in wanted if t not in active]
    if not missing:
        return f"all {len(wanted)} webhooks active to {route}"
    return f"not active to {route} yet: {', '.join(missing)} (`merchants subscribe` adds them)"


def _sample(loop: LoopClient, now: datetime) -> list[dict]:
    """Up to SAMPLE_RETURNS open returns created in the last SAMPLE_DAYS (one page)."""
    start = (now - timedelta(days=SAMPLE_DAYS)).strftime(LOOP_TIME)
    found = loop.iter_returns(start=start, end=now.strftime(LOOP_TIME), state="open",
                              filter_by="created_at", page_size=SAMPLE_RETURNS)
    return list(itertools.islice(found, SAMPLE_RETURNS))


def _check_loop(loop: LoopClient, merchant: Merchant, now: datetime) -> tuple[list[Check], list[dict] | None]:
    sample: list[dict] | None = None
    returns_error = webhooks_error = None
    hooks: list[dict] = []
    try:
        sample = _sample(loop, now)
    except UpstreamError as exc:
        returns_error = exc
    try:
        hooks = loop.list_webhooks()
    except UpstreamError as exc:
        webhooks_error = exc
    checks = loop_verdicts(merchant.loop_base_url, returns_error, webhooks_error, len(sample or []),
                           subscriptions(hooks, merchant.name))
    return checks, sample


# --- check: RLM ----------------------------------------------------------------------------------
def rlm_verdicts(merchant: Merchant, error: UpstreamError | None, warehouses: list[dict],
                 divisions: list[dict]) -> list[Check]:
    """RLM's credentials, company, returns warehouse and division, from how the reference data
    calls answered (RLM checks the user and key first, then the company: docs/rlm-api.md B.2)."""
    company = f"company {merchant.rlm_company}"
    if error is not None:
        if error.status == 401:
            return [Check("RLM credentials", Status.FAILED,
                          f"{merchant.rlm_base_url} refused user {merchant.rlm_username!r} "
                          f"({describe(error)}): check rlm_username and rlm_key"),
                    Check("RLM company", Status.SKIPPED, "needs credentials RLM accepts")]
        if error.status == 404 or "company" in error.message.lower():
            return [Check("RLM credentials", Status.OK, f"user {merchant.rlm_username!r} accepted"),
                    Check("RLM company", Status.FAILED, f"RLM has no {company} ({describe(error)}): "
                          "check rlm_company")]
        return [Check("RLM credentials", Status.FAILED, f"{merchant.rlm_base_url}: {describe(error)}")]
    checks = [Check("RLM credentials", Status.OK, f"user {merchant.rlm_username!r} accepted"),
              Check("RLM company", Status.OK, f"{company} answers")]
    number = merchant.warehouse_number
    warehouse = next((w for w in warehouses if w.get("warehouse_number") == number), None)
    if warehouse is None:
        checks.append(Check("returns warehouse", Status.FAILED, f"{company} has no warehouse {number}: "
                            "check warehouse_number"))
    elif warehouse.get("accepts_returns") is False:
        checks.append(Check("returns warehouse", Status.FAILED, f"warehouse {number} "
                            f"({warehouse.get('name')}) does not accept returns: RLM would refuse every RMA"))
    else:
        checks.append(Check("returns warehouse", Status.OK, f"warehouse {number} ({warehouse.get('name')}) "
                            "accepts returns"))
    if any(d.get("division_number") == merchant.division_number for d in divisions):
        checks.append(Check("RLM division", Status.OK, f"division {merchant.division_number} exists"))
    else:
        checks.append(Check("RLM division", Status.FAILED, f"{company} has no division "
                            f"{merchant.division_number}: check division_number"))
    return checks


def _check_rlm(rlm: RlmClient, merchant: Merchant) -> list[Check]:
    try:
        warehouses, divisions = rlm.warehouses(), rlm.divisions()
    except UpstreamError as exc:
        return rlm_verdicts(merchant, exc, [], [])
    return rlm_verdicts(merchant, None, warehouses, divisions)


# --- check: a sample of returns' SKUs in RLM's catalog ----------------------------------------------
def lookups(group: UnitGroup, sku_pattern: str) -> str:
    """The catalog lookups the workflow tries for a SKU (mapping.sku_candidates), in words."""
    tried = [f"UPC {q['upc']}" if "upc" in q else f"style {q['style_number']} colour {q['color']} size {q['size']}"
             for q in sku_candidates(group, sku_pattern)]
    text = ", then ".join(tried) if tried else "nothing (no barcode, no SKU)"
    if group.sku and split_sku(group.sku, sku_pattern) is None:
        text += f"; the SKU does not fit sku_pattern {sku_pattern!r}, so style/colour/size were not tried"
    return text


def sku_verdict(loop_return_id: str, unknown: list[str], resolved: int) -> Check:
    name = f"Loop return {loop_return_id}: SKUs"
    if unknown:
        return Check(name, Status.FAILED, "SKU unknown to RLM: " + "; ".join(unknown)
                     + ". Its RMA would not be created: fix the catalog, the barcodes or sku_pattern")
    return Check(name, Status.OK, f"{resolved} SKU(s) found in RLM's catalog")


def _check_skus(rlm: RlmClient, merchant: Merchant, sample: list[dict]) -> list[Check]:
    if not sample:
        return [Check("sample returns' SKUs", Status.SKIPPED,
                      f"no open Loop returns created in the last {SAMPLE_DAYS} days to try")]
    checks: list[Check] = []
    known: dict[tuple[str, str], bool] = {}  # a SKU shared by several returns is looked up once
    for item in sample:
        groups = group_units([unit_from_loop(u) for u in item.get("line_items") or []])
        unknown: list[str] = []
        try:
            for group in groups:
                key = (group.sku, group.barcode)
                if key not in known:
                    known[key] = resolve_group(rlm, merchant, group) is not None
                if not known[key]:
                    unknown.append(f"{group.sku or '(no SKU)'} (barcode {group.barcode or 'none'}), "
                                   f"looked up by {lookups(group, merchant.sku_pattern)}")
        except UpstreamError as exc:
            checks.append(Check(f"Loop return {item.get('id')}: SKUs", Status.FAILED,
                                f"RLM's catalog lookup failed: {describe(exc)}"))
            continue
        checks.append(sku_verdict(str(item.get("id")), unknown, len(groups)))
    return checks


def fresh(ctx: Context, merchant: Merchant) -> Context:
    """`ctx` with clients built for this very configuration: a Context keeps its clients by
    merchant name, and a check must try the values just saved, not those of an earlier call."""
    return replace(ctx, merchants={**ctx.merchants, merchant.name: merchant}, _loop={}, _rlm={})


def check_merchant(ctx: Context, merchant: Merchant, *, operator: str) -> Report:
    """Every check, each one ok / failed with its reason / skipped (needs an earlier one)."""
    ctx = fresh(ctx, merchant)
    now = ctx.now()
    loop_checks, sample = _check_loop(ctx.loop(merchant), merchant, now)
    rlm_checks = _check_rlm(ctx.rlm(merchant), merchant)
    if sample is None:
        sku_checks = [Check("sample returns' SKUs", Status.SKIPPED, "needs the Loop Returns scope")]
    elif any(c.status is not Status.OK for c in rlm_checks if c.name in ("RLM credentials", "RLM company")):
        sku_checks = [Check("sample returns' SKUs", Status.SKIPPED, "needs RLM credentials and company that work")]
    else:
        sku_checks = _check_skus(ctx.rlm(merchant), merchant, sample)
    items = tuple(loop_checks + rlm_checks + sku_checks)
    failed = sum(c.status is Status.FAILED for c in items)
    summary = f"{failed} of {len(items)} checks failed" if failed else f"all {len(items)} checks passed"
    return _logged(Report(action="check", merchant=merchant.name, operator=operator, at=now,
                          items=items, summary=summary))


# --- subscribe -----------------------------------------------------------------------------------
def webhook_url(base_url: str, merchant_name: str) -> str:
    """Where Loop sends a merchant's webhooks: the receiver's public base URL + its route."""
    base = base_url.strip().rstrip("/")
    if not base.startswith(("https://", "http://")) or "?" in base or "#" in base:
        raise ValueError(f"the receiver's public URL must be http(s)://host[/path], not {base_url!r}")
    return f"{base}/webhooks/loop/{merchant_name}"


TOPIC_HINTS = {
    # docs/loop-api.md §5.1: accounts on an older API may not offer this topic yet.
    "return.processing": " Without it a failed processing shows only when the outcome wait "
                         "(LOOP_OUTCOME_WINDOW_S) ends: ask Loop to enable the topic, then subscribe again.",
}


def subscribe(ctx: Context, merchant: Merchant, base_url: str, *, operator: str,
              triggers: dict[str, list[str]] | None = None) -> Report:
    """Subscribe each topic on its own (LoopClient.ensure_webhooks creates only what is missing,
    so running it again changes nothing): a topic Loop refuses is reported, the others are
    still subscribed."""
    url = webhook_url(base_url, merchant.name)
    loop = fresh(ctx, merchant).loop(merchant)
    items = []
    for topic, names in (triggers or WEBHOOK_TRIGGERS).items():
        try:
            changed = loop.ensure_webhooks(url, {topic: names})
        except UpstreamError as exc:
            items.append(Check(f"topic {topic}", Status.FAILED,
                               f"Loop refused it: {describe(exc)}.{TOPIC_HINTS.get(topic, '')}"))
            continue
        done = f"{len(changed)} created or re-activated" if changed else "all were already active"
        items.append(Check(f"topic {topic}", Status.OK, f"{', '.join(names)} → {url} ({done})"))
    failed = sum(c.status is Status.FAILED for c in items)
    summary = (f"{failed} of {len(items)} topics refused" if failed else f"{len(items)} topics subscribed") + f" at {url}"
    return _logged(Report(action="subscribe", merchant=merchant.name, operator=operator, at=ctx.now(),
                          items=tuple(items), summary=summary))


# --- backfill ------------------------------------------------------------------------------------
BACKFILL_STATES = ("open",)  # what still needs an RMA; closed or cancelled returns need none


def backfill(ctx: Context, merchant_name: str, since: datetime, *, operator: str) -> Report:
    """Record every open Loop return created since `since` that we have no record of, through the
    same path as a webhook or the Loop returns pull (ingest_return): its RMA follows on the
    workers. Safe to repeat: a known return is not listed again, recording one is keyed by its
    Loop id, and RLM's create is keyed by the return (docs/rlm-api.md B.6)."""
    merchant = ctx.merchant(merchant_name)
    missing = actions.missing_returns(ctx, merchant_name, since, states=BACKFILL_STATES)
    items = []
    for item in missing:
        ingest_return(ctx, merchant, item, cause=f"backfilled by {operator}")
        items.append(Check(f"Loop return {item['id']}", Status.OK, "recorded; its RMA follows on the workers"))
    summary = (f"{len(items)} open returns created since {since:%Y-%m-%d} recorded" if items else
               f"nothing to do: every open return created since {since:%Y-%m-%d} is already known")
    return _logged(Report(action="backfill", merchant=merchant_name, operator=operator, at=ctx.now(),
                          items=tuple(items), summary=summary))


def _logged(report: Report) -> Report:
    """One log line per action with who asked (names and counts only, like every log line)."""
    log.info("merchants.%s by %s: %s", report.action, report.operator, report.summary,
             extra={"operator": report.operator, "action": f"merchants.{report.action}",
                    "merchant": report.merchant, "outcome": "ok" if report.ok else "failed"})
    return report


def render(report: Report) -> Iterable[str]:
    """The report as lines for a terminal: one per item, then the summary."""
    for item in report.items:
        yield f"{item.status.value:<8} {item.name}: {item.detail}"
    yield report.summary
