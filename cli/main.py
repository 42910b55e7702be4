"""`rlm-loop <command>` (or `python -m cli <command>`): the operator commands; docs/operations.md.

The database: init-db. One return: status, retry, redecide, replay (each manual action records
the operator: --operator, cli/operators.py). Webhook deliveries: events list. The service:
backfill, merchants, doctor, shadow report. Commands read the same environment as the service, talk to the database
directly, and publish tasks by name on the broker (never importing the workers). The local
stack's `demo` and `up` are listed too, but stack/ is imported only when one of them runs.
"""
from __future__ import annotations

import importlib
import json
import sys
from collections.abc import Callable
from datetime import UTC, datetime

import click
from sqlalchemy import select

from cli.doctor import run_checks
from cli.events import events
from cli.listing import attention, retry_group, returns_group
from cli.merchants import merchants_group
from cli.operators import operator_name, operator_option
from cli.shadow import shadow_group
from cli.status import describe
from cli.wiring import (
    context,
    database_errors,
    merchant_of,
    name_connections,
    require_database,
    settings_and_merchants,
)
from integration.merchants import load_merchants
from integration.ops import actions
from integration.ops.actions import ActionResult, Outcome
from integration.production import RefusedToStart, refuse_to_run_wrong
from integration.settings import load_settings
from integration.store.models import Return
from integration.store.schema import migrate
from integration.store.status import return_view
from integration.workflow.events import ingest_return


class _Commands(click.Group):
    """The operator commands, and the local stack's `demo` and `up` loaded from stack.cli on
    demand: stack/ supervises processes and sandboxes the service itself never needs."""

    LOCAL_STACK = ("demo", "up")

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.LOCAL_STACK})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in self.LOCAL_STACK and name not in self.commands:
            local_stack: click.Group = importlib.import_module("stack.cli").main
            return local_stack.get_command(ctx, name)
        return super().get_command(ctx, name)


@click.group(cls=_Commands)
def main() -> None:
    """RLM ⇄ Loop returns integration."""
    name_connections()


merchant_option = click.option("--merchant", help="Merchant name (needed only if the id is ambiguous).")


@main.command("init-db")
def init_db() -> None:
    """Create or upgrade the database schema (alembic upgrade head)."""
    settings = load_settings()
    try:
        refuse_to_run_wrong(settings, load_merchants)
    except RefusedToStart as exc:
        raise click.ClickException(str(exc)) from None
    with database_errors(settings.database_url):
        click.echo(migrate(settings.database_url))


# --- one return ------------------------------------------------------------------------------
@main.command()
@click.argument("loop_return_id")
@merchant_option
@click.option("--json", "as_json", is_flag=True, help="The full record as JSON (as the API answers).")
def status(loop_return_id: str, merchant: str | None, as_json: bool) -> None:
    """What happened to a return and why: state, RMA, decision, receipts, timeline."""
    settings, merchants = settings_and_merchants()
    require_database(settings.database_url)
    ctx = context(settings, merchants, publish=False)
    name = merchant_of(ctx, loop_return_id, merchant)
    with ctx.sessions() as s:
        ret = s.scalar(select(Return).where(Return.merchant == name,
                                            Return.loop_return_id == loop_return_id))
        if ret is None:
            raise click.ClickException(f"no return {loop_return_id} for merchant {name}")
        view = return_view(ret)
    click.echo(json.dumps(view, indent=2) if as_json else describe(view))


@main.command()
@click.argument("loop_return_id")
@merchant_option
@operator_option
def retry(loop_return_id: str, merchant: str | None, operator: str | None) -> None:
    """Resume a parked (needs_attention) return at the step that failed."""
    _on_return(actions.retry_return, loop_return_id, merchant, operator)


@main.command()
@click.argument("loop_return_id")
@merchant_option
@operator_option
def redecide(loop_return_id: str, merchant: str | None, operator: str | None) -> None:
    """Run the decision again for a return not yet acted on in Loop."""
    _on_return(actions.redecide_return, loop_return_id, merchant, operator)


@main.command()
@click.argument("event_id", type=int)
@operator_option
def replay(event_id: int, operator: str | None) -> None:
    """Hand a stored webhook event to the pipeline again."""
    name = operator_name(operator)
    settings, merchants = settings_and_merchants()
    require_database(settings.database_url)
    _show(actions.replay_event(context(settings, merchants), event_id, operator=name))


main.add_command(events)  # `events list`: failed and invalid deliveries, to replay


def _on_return(action: Callable[..., ActionResult], loop_return_id: str, merchant: str | None,
               operator: str | None) -> None:
    name = operator_name(operator)
    settings, merchants = settings_and_merchants()
    require_database(settings.database_url)
    ctx = context(settings, merchants)
    _show(action(ctx, merchant_of(ctx, loop_return_id, merchant), loop_return_id, operator=name))


def _show(result: ActionResult) -> None:
    """The result's sentence; a target that does not exist is an error (exit 1)."""
    if result.outcome is Outcome.NOT_FOUND:
        raise click.ClickException(result.message)
    click.echo(result.message)


# --- the service -----------------------------------------------------------------------------
@main.command()
@click.option("--since", required=True, type=click.DateTime(["%Y-%m-%d"]),
              help="Returns created in Loop on or after this day (UTC).")
@merchant_option
def backfill(since: datetime, merchant: str | None) -> None:
    """Pull Loop's returns list and create every return we have no record of."""
    settings, merchants = settings_and_merchants()
    require_database(settings.database_url)
    ctx = context(settings, merchants)
    names = [merchant] if merchant else list(merchants)
    for name in names:
        if name not in merchants:
            raise click.ClickException(f"no merchant {name}")
        click.echo(f"{name}: listing Loop returns created since {since:%Y-%m-%d}…")
        missing = actions.missing_returns(ctx, name, since.replace(tzinfo=UTC))
        with click.progressbar(missing, label=f"{name}: creating {len(missing)} missing returns",
                               show_pos=True) as bar:
            for item in bar:
                ingest_return(ctx, ctx.merchant(name), item, cause="created by a backfill")
        click.echo(f"{name}: {len(missing)} returns created; their RMAs follow on the workers")


main.add_command(merchants_group)  # `merchants` lists; its subcommands keep merchants as data
main.add_command(shadow_group)  # `shadow report`: shadow mode's decisions against people's


@main.command()
def doctor() -> None:
    """Check configuration and reach Loop, RLM, Redis and the database: one line per check."""
    settings = load_settings()
    checks = run_checks(settings, lambda merchants: context(settings, merchants, publish=False))
    for c in checks:
        click.echo(f"{c.status:<4}  {c.name:<20} {c.detail}")
    failed = sum(c.status == "FAIL" for c in checks)
    click.echo(f"\n{failed} problem(s) found" if failed else "\nall checks passed")
    sys.exit(1 if failed else 0)


# --- many returns (cli/listing.py) -------------------------------------------------------------
for _command in (returns_group, attention, retry_group):
    main.add_command(_command)


if __name__ == "__main__":
    main()
