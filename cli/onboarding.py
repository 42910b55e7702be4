"""`rlm-loop merchants check|subscribe|backfill NAME`: onboarding a merchant
(integration/ops/onboarding.py). Each prints one line per item (ok / failed / skipped, with the
reason), keeps its report for the /ops merchants page, names the operator, and exits 1 if
anything failed."""
from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta

import click

from cli.operators import operator_name, operator_option
from cli.wiring import context, database_errors, require_database, settings_and_merchants
from integration.merchants import ConfigError, Merchant
from integration.ops import onboarding, onboarding_record
from integration.ops.onboarding import Report
from integration.settings import Settings
from integration.store import merchant_store
from integration.store.db import session_factory

BACKFILL_DAYS = 90


def _merchant(name: str, *, running: bool) -> tuple[Settings, dict[str, Merchant], Merchant]:
    """The merchant by name: one in effect, else (unless it must be `running`) a stored one that
    is disabled, which can be checked before it is enabled."""
    settings, merchants = settings_and_merchants()
    require_database(settings.database_url)
    if name in merchants:
        return settings, merchants, merchants[name]
    stored: dict[str, Merchant] = {}
    with database_errors(settings.database_url), session_factory(settings.database_url)() as s:
        if name in merchant_store.stored_names(s):
            try:
                stored = merchant_store.load_all(s, merchant_store.keys_from_env(), include_disabled=True)
            except ConfigError as exc:
                raise click.ClickException(str(exc)) from None
    if name not in stored:
        raise click.ClickException(f"no merchant {name}")
    if running:
        raise click.ClickException(f"merchant {name} is disabled: `rlm-loop merchants enable {name}` first")
    return settings, merchants, stored[name]


def _finish(settings: Settings, report: Report) -> None:
    """Print the report, keep it for the pages, exit 1 if anything failed."""
    for line in onboarding.render(report):
        click.echo(line)
    with database_errors(settings.database_url), session_factory(settings.database_url)() as s:
        onboarding_record.keep(s, report)
    sys.exit(0 if report.ok else 1)


@click.command("check")
@click.argument("name")
@operator_option
def check_command(name: str, operator: str | None) -> None:
    """Prove a merchant's connections live: the Loop key and its scopes, RLM's credentials,
    company, returns warehouse and division, and the SKUs of a few recent open Loop returns in
    RLM's catalog. A disabled stored merchant can be checked too."""
    who = operator_name(operator)
    settings, merchants, merchant = _merchant(name, running=False)
    _finish(settings, onboarding.check_merchant(context(settings, merchants, publish=False), merchant,
                                                operator=who))


@click.command("subscribe")
@click.argument("name")
@click.option("--url", "base_url", required=True, metavar="URL",
              help="The receiver's public base URL, e.g. https://my-rlm-loop.herokuapp.com; "
                   "Loop posts to URL/webhooks/loop/NAME.")
@operator_option
def subscribe_command(name: str, base_url: str, operator: str | None) -> None:
    """Subscribe the merchant's Loop account to the webhooks the service acts on, each topic on
    its own: a topic Loop refuses is reported, the others are still subscribed. Safe to repeat."""
    who = operator_name(operator)
    settings, merchants, merchant = _merchant(name, running=True)
    try:
        onboarding.webhook_url(base_url, name)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    _finish(settings, onboarding.subscribe(context(settings, merchants, publish=False), merchant, base_url,
                                           operator=who))


@click.command("backfill")
@click.argument("name")
@click.option("--since", type=click.DateTime(["%Y-%m-%d"]),
              help=f"Open returns created in Loop on or after this day (UTC); default {BACKFILL_DAYS} days ago.")
@operator_option
def backfill_command(name: str, since: datetime | None, operator: str | None) -> None:
    """Bring in the merchant's returns already open in Loop: each one we have no record of is
    recorded as a webhook would, and its RMA follows on the workers. Safe to repeat: no return
    and no RMA is made twice."""
    who = operator_name(operator)
    settings, merchants, _ = _merchant(name, running=True)
    start = since.replace(tzinfo=UTC) if since else datetime.now(UTC) - timedelta(days=BACKFILL_DAYS)
    _finish(settings, onboarding.backfill(context(settings, merchants), name, start, operator=who))


COMMANDS = (check_command, subscribe_command, backfill_command)
