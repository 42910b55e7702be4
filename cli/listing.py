"""Operator commands over many returns: `returns list`, `attention`, `retry-group`.

Registered on the main group by cli/main.py; the queries and the bulk retry are
integration/ops (the pages render the same).
"""
from __future__ import annotations

import json
import shlex
from datetime import UTC, datetime

import click

from cli.operators import operator_name, operator_option
from cli.wiring import context, require_database, settings_and_merchants
from integration.ops import actions, queries
from integration.ops.paging import BadCursor, Cursor


def _utc_text(value: datetime) -> str:
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).strftime("%Y-%m-%d %H:%M:%S")


def _cursor(_ctx, _param, value: str | None) -> Cursor | None:
    try:
        return Cursor.decode(value) if value else None
    except BadCursor as exc:
        raise click.BadParameter(str(exc)) from None


@click.group("returns")
def returns_group() -> None:
    """Returns: list them with filters, a page at a time."""


@returns_group.command("list")
@click.option("--merchant", help="Only this merchant's returns.")
@click.option("--state", help="Only returns in this state (needs_attention, complete, ...).")
@click.option("--reason", help="Only returns whose attention reason contains this (any case).")
@click.option("--since", type=click.DateTime(["%Y-%m-%d"]),
              help="Only returns updated on or after this day (UTC).")
@click.option("--limit", type=click.IntRange(1, queries.MAX_PAGE_SIZE), default=queries.PAGE_SIZE,
              show_default=True, help="Returns per page.")
@click.option("--after", callback=_cursor, metavar="CURSOR",
              help="The cursor the previous page printed: the page after it.")
@click.option("--json", "as_json", is_flag=True, help="The page and its next cursor as JSON.")
def list_returns(merchant: str | None, state: str | None, reason: str | None,
                 since: datetime | None, limit: int, after: Cursor | None, as_json: bool) -> None:
    """Returns, most recently updated first: one line each, then the next page's cursor."""
    settings, merchants = settings_and_merchants()
    require_database(settings.database_url)
    ctx = context(settings, merchants, publish=False)
    with ctx.sessions() as s:
        page = queries.list_returns(s, merchant=merchant, state=state, reason=reason,
                                    since=since.replace(tzinfo=UTC) if since else None,
                                    after=after, limit=limit)
    cursor = page.next_cursor.encode() if page.next_cursor else None
    if as_json:
        click.echo(json.dumps({"returns": [{
            "merchant": r.merchant, "loop_return_id": r.loop_return_id, "state": r.state,
            "order_name": r.order_name, "rma_number": r.rma_number, "decision": r.decision,
            "attention_step": r.attention_step, "attention_reason": r.attention_reason,
            "updated_at": _utc_text(r.updated_at)} for r in page.rows], "next_cursor": cursor},
            indent=2))
        return
    for r in page.rows:
        reason_text = f"  {r.attention_step or '-'}: {r.attention_reason[:80]}" if r.attention_reason else ""
        click.echo(f"{_utc_text(r.updated_at)}  {r.merchant:<12} {r.loop_return_id:<14} "
                   f"{r.state:<18} RMA {r.rma_number or '-':<8}{reason_text}".rstrip())
    if not page.rows:
        click.echo("no returns match")
    click.echo(f"next page: --after {cursor}" if cursor else "last page")


@click.command("attention")
@click.option("--merchant", help="Only this merchant's parked returns.")
def attention(merchant: str | None) -> None:
    """Parked (needs_attention) returns grouped by merchant, step and cause, largest first."""
    settings, merchants = settings_and_merchants()
    require_database(settings.database_url)
    ctx = context(settings, merchants, publish=False)
    with ctx.sessions() as s:
        groups = queries.attention_groups(s, merchant)
    if not groups:
        click.echo("no returns need attention")
    for g in groups:
        preview = shlex.join(["rlm-loop", "retry-group", "--merchant", g.merchant, "--step", g.step,
                              "--reason-key", g.reason_key, "--dry-run"])
        click.echo(f"{g.count:>5}  {g.merchant}  step {g.step}  since {_utc_text(g.oldest)}\n"
                   f"       key      {g.reason_key}\n"
                   f"       example  {g.example_reason[:200]}\n"
                   f"       preview  {preview}")


@click.command("retry-group")
@click.option("--merchant", required=True, help="The merchant of the group.")
@click.option("--step", required=True, help=f"The step it is parked at ({queries.NO_STEP}: none).")
@click.option("--reason-key", required=True, help="The group's key, as `rlm-loop attention` prints it.")
@click.option("--dry-run", is_flag=True, help="Change nothing: say what each retry would do.")
@click.option("--limit", type=click.IntRange(1, 10_000), default=actions.BULK_LIMIT,
              show_default=True, help="At most this many returns, longest parked first.")
@operator_option
def retry_group(merchant: str, step: str, reason_key: str, dry_run: bool, limit: int,
                operator: str | None) -> None:
    """Retry every parked return of one group (see `attention`); exit 1 if the group is empty."""
    name = operator_name(operator)
    settings, merchants = settings_and_merchants()
    if merchant not in merchants:
        raise click.ClickException(f"no merchant {merchant}")
    require_database(settings.database_url)
    ctx = context(settings, merchants, publish=not dry_run)
    result = actions.retry_group(ctx, merchant, step, reason_key, dry_run=dry_run, limit=limit,
                                 operator=name)
    if not result.found:
        raise click.ClickException(f"no returns of {merchant} parked at {step} with reason key "
                                   f"{reason_key!r} (see `rlm-loop attention`)")
    for label, items in (("would retry", result.would_retry), ("retried", result.retried),
                         ("skipped", result.skipped)):
        for item in items:
            click.echo(f"{label:<12} {item.loop_return_id:<14} {item.what}")
    summary = (f"{len(result.would_retry)} would be retried (dry run: nothing changed)" if dry_run
               else f"{len(result.retried)} retried, {len(result.skipped)} skipped")
    more = f"; {result.left} more in the group beyond --limit {limit}" if result.left else ""
    click.echo(summary + more)
