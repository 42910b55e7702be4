"""`rlm-loop shadow report`: per merchant, the returns decided in shadow mode, how many a person
then handled in Loop as we would have (agreed) or not (disagreed), how many still wait, and each
disagreement with our rules and reasons (integration/ops/shadow.py)."""
from __future__ import annotations

import json
from datetime import UTC, datetime

import click

from cli.wiring import context, require_database, settings_and_merchants
from integration.ops.shadow import MerchantAgreement, agreement_report, shadow_returns


@click.group("shadow")
def shadow_group() -> None:
    """Shadow mode: decisions recorded instead of sent to Loop, compared with what people did."""


@shadow_group.command("report")
@click.option("--merchant", help="Only this merchant.")
@click.option("--since", type=click.DateTime(["%Y-%m-%d"]), help="Decided on or after this day (UTC).")
@click.option("--json", "as_json", is_flag=True, help="The report as JSON.")
def report(merchant: str | None, since: datetime | None, as_json: bool) -> None:
    """Decided, agreed, disagreed and waiting per merchant; each disagreement with its reasons."""
    settings, merchants = settings_and_merchants()
    require_database(settings.database_url)
    ctx = context(settings, merchants, publish=False)
    with ctx.sessions() as s:
        rows = shadow_returns(s, merchant=merchant, since=since.replace(tzinfo=UTC) if since else None)
    reports = agreement_report(rows)
    if as_json:
        click.echo(json.dumps([r.as_dict() for r in reports], indent=2, default=str))
        return
    if not reports:
        click.echo("no returns decided in shadow mode" + (f" for {merchant}" if merchant else "")
                   + (f" since {since:%Y-%m-%d}" if since else ""))
    for r in reports:
        click.echo("\n".join(describe(r)))


def describe(r: MerchantAgreement) -> list[str]:
    rate = f"{r.agreement_rate:.0%}" if r.agreement_rate is not None else "-"
    lines = [f"{r.merchant}: decided {r.decided}, agreed {r.agreed}, disagreed {r.disagreed}, "
             f"waiting for a person {r.waiting} (agreement {rate})"]
    for d in r.disagreements:
        rules = ", ".join(d.rules) or "none"
        lines.append(f"  return {d.loop_return_id} (RA {d.rma_number or '-'}): we would {d.would} "
                     f"(rules: {rules}); the person {d.person}")
        lines.extend(f"    {reason}" for reason in d.reasons)
    return lines
