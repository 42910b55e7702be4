"""`rlm-loop events list`: stored webhook deliveries, failed and invalid by default, newest first
(integration/ops/deliveries.py). `rlm-loop replay EVENT_ID` hands one to the pipeline again."""
from __future__ import annotations

import json
from datetime import UTC, datetime

import click

from cli.wiring import context, require_database, settings_and_merchants
from integration.ops.deliveries import MAX_LIMIT, PROBLEMS, Delivery, list_deliveries
from integration.store.models import InboxStatus


@click.group()
def events() -> None:
    """Stored Loop webhook deliveries."""


@events.command("list")
@click.option("--merchant", help="Only this merchant's deliveries.")
@click.option("--status", "statuses", multiple=True, type=click.Choice([s.value for s in InboxStatus]),
              help="Only deliveries in this status (repeatable; default: failed and invalid).")
@click.option("--since", type=click.DateTime(["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S"]),
              help="Received on or after this day or time (UTC).")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, MAX_LIMIT))
@click.option("--after", metavar="CURSOR", help="The next page: the cursor the last page printed.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object: the rows and the next cursor.")
def list_events(merchant: str | None, statuses: tuple[str, ...], since: datetime | None, limit: int,
                after: str | None, as_json: bool) -> None:
    """Deliveries newest first: id, merchant, status, trigger, Loop return, attempts, last error."""
    settings, merchants = settings_and_merchants()
    require_database(settings.database_url)
    ctx = context(settings, merchants, publish=False)
    try:
        with ctx.sessions() as s:
            page = list_deliveries(s, merchant=merchant, statuses=statuses or PROBLEMS, limit=limit,
                                   since=since.replace(tzinfo=UTC) if since else None, after=after)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(json.dumps({"events": [d.as_json() for d in page.rows],
                               "next_cursor": page.next_cursor}, indent=2))
        return
    for d in page.rows:
        click.echo(_line(d))
    if not page.rows:
        click.echo("no deliveries match")
    if page.next_cursor:
        click.echo(f"more: --after {page.next_cursor}")


def _line(d: Delivery) -> str:
    what = d.trigger or d.topic or "-"  # a trigger names its topic: return.updated
    error = (d.last_error or "").splitlines()[0][:100] if d.last_error else ""
    return (f"{d.id:>8}  {d.received_at:%Y-%m-%d %H:%M:%S}  {d.merchant:<12} {d.status:<10} "
            f"{what:<26} return {d.loop_return_id or '-':<12} attempts {d.attempts:<3} {error}").rstrip()
