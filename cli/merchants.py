"""`rlm-loop merchants`: list the merchants in effect (as before, with no subcommand), and keep
merchants as data in the database (integration/store/merchant_store.py): import, add, update,
disable, enable, show (secrets masked), rotate-keys. Secrets come from a TOML file, never from
the output; MERCHANT_KEYS encrypts them. Onboarding (check, subscribe, backfill): cli/onboarding.py."""
from __future__ import annotations

import json
import logging
import sys
import tomllib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import click
from cryptography.fernet import MultiFernet
from sqlalchemy.orm import Session

from cli.onboarding import COMMANDS as ONBOARDING
from cli.operators import operator_name, operator_option
from cli.wiring import database_errors, require_database, settings_and_merchants
from integration.merchants import SHADOW, ConfigError, configured_from_environment
from integration.ops import onboarding_record
from integration.production import merchant_problems
from integration.settings import load_settings
from integration.store import merchant_store
from integration.store.db import session_factory

T = TypeVar("T")
log = logging.getLogger(__name__)


@click.group("merchants", invoke_without_command=True)
@click.pass_context
def merchants_group(ctx: click.Context) -> None:
    """The merchants: with no subcommand, list them and validate their configuration (exit 1 if
    it is invalid)."""
    if ctx.invoked_subcommand is None:
        ctx.invoke(list_merchants)


@merchants_group.command("list")
def list_merchants() -> None:
    """List the merchants in effect and validate their configuration (exit 1 if it is invalid)."""
    settings, merchants = settings_and_merchants()
    problems = 0
    for m in merchants.values():
        c = m.criteria
        click.echo(f"{m.name}")
        click.echo(f"  Loop   {m.loop_base_url} (API {m.loop_api_version}), "
                   f"{len(m.webhook_secrets)} webhook secret(s)")
        click.echo(f"  RLM    {m.rlm_base_url} company {m.rlm_company}, division {m.division_number}, "
                   f"returns warehouse {m.warehouse_number}, auto-transmit {'on' if m.rlm_auto_transmit else 'off'}")
        click.echo(f"  rules  accept {'/'.join(c.accepted_conditions)}; missing units after "
                   f"{c.partial_grace_s / 3600:g} h: {c.on_missing}; value threshold "
                   f"{c.value_threshold if c.value_threshold is not None else 'none'}; expiry "
                   f"{c.expiry_days:g} days: {c.on_expiry}")
        if m.mode == SHADOW:
            click.echo("  mode   shadow: decisions recorded, nothing sent to Loop")
        unfit = merchant_problems(m, configured_from_environment()) if settings.production else []
        for problem in unfit:
            problems += 1
            click.echo(f"  FAIL   {problem}")
    for name, enabled in _stored_names(settings.database_url).items():
        if not enabled:
            click.echo(f"{name} (stored, disabled)")
    if problems:
        sys.exit(1)


def _stored_names(url: str) -> dict[str, bool]:
    with database_errors(url):
        if not merchant_store.table_exists(url):
            return {}
        with session_factory(url)() as s:
            return merchant_store.stored_names(s)


@contextmanager
def _store() -> Iterator[tuple[Session, MultiFernet | None]]:
    """A session on DATABASE_URL and MERCHANT_KEYS; a bad value or an unknown name ends with one line."""
    settings = load_settings()
    require_database(settings.database_url)
    try:
        keys = merchant_store.keys_from_env()
        with database_errors(settings.database_url), session_factory(settings.database_url)() as s:
            yield s, keys
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    except merchant_store.UnknownMerchant as exc:
        raise click.ClickException(str(exc.args[0])) from None


def _run(fn: Callable[[Session, MultiFernet | None], T]) -> T:
    with _store() as (session, keys):
        return fn(session, keys)


def _changed(operator: str, action: str, names: list[str], outcome: str) -> None:
    """Who changed which merchants, and how: a log line and each merchant's kept "change" report,
    as the /ops merchants page records them (names only: never a value, which may be a secret)."""
    if not names:
        return
    log.info("merchants.%s by %s: %s", action, operator, outcome,
             extra={"operator": operator, "action": f"merchants.{action}", "outcome": outcome})

    def keep(s: Session, _keys: MultiFernet | None) -> None:
        for name in names:
            onboarding_record.keep_change(s, name, operator, f"{action}: {outcome}")

    _run(keep)


def _import(path: Path, only_new: bool, operator: str) -> None:
    try:
        text = path.read_text()
    except OSError as exc:
        raise click.ClickException(f"{path}: {exc.strerror}") from None

    def run(s: Session, keys: MultiFernet | None) -> merchant_store.ImportResult:
        if only_new:
            names = [e.get("name") for e in tomllib.loads(text).get("merchants", []) if isinstance(e, dict)]
            taken = sorted(n for n in names if n in merchant_store.stored_names(s))
            if taken:
                raise ConfigError(f"already stored: {', '.join(taken)} (use `merchants import` or `update`)")
        return merchant_store.import_toml(s, text, keys)

    try:
        result = _run(run)
    except tomllib.TOMLDecodeError as exc:
        raise click.ClickException(f"{path}: not TOML: {exc}") from None
    for what in ("added", "updated", "unchanged"):
        names = getattr(result, what)
        click.echo(f"{what:<9} {', '.join(names) if names else '-'}")
    _changed(operator, "add" if only_new else "import", result.added + result.updated,
             f"added {', '.join(result.added) or '-'}; updated {', '.join(result.updated) or '-'}")


@merchants_group.command("import")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
@operator_option
def import_command(file: Path, operator: str | None) -> None:
    """Store every [[merchants]] entry of a TOML FILE (added, updated or unchanged: safe to repeat)."""
    _import(file, only_new=False, operator=operator_name(operator))


@merchants_group.command("add")
@click.option("--from-toml", "file", required=True, type=click.Path(path_type=Path, dir_okay=False),
              help="TOML file with the new merchants' [[merchants]] entries.")
@operator_option
def add_command(file: Path, operator: str | None) -> None:
    """Store new merchants from a TOML file (refused if one of them is already stored)."""
    _import(file, only_new=True, operator=operator_name(operator))


def _value(text: str) -> object:
    """A TOML value (90, true, ["a", "b"], "text"), or the text itself."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


@merchants_group.command("update")
@click.argument("name")
@click.option("--set", "assignments", multiple=True, required=True, metavar="KEY=VALUE",
              help="A key as in the TOML (criteria.expiry_days for a criterion); repeatable.")
@operator_option
def update_command(name: str, assignments: tuple[str, ...], operator: str | None) -> None:
    """Change keys of a stored merchant, validated as the TOML is."""
    who = operator_name(operator)
    changes: dict[str, object] = {}
    for item in assignments:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise click.ClickException(f"--set {key.strip() or item!r}: expected KEY=VALUE")
        changes[key.strip()] = _value(text.strip())
    outcome = _run(lambda s, keys: merchant_store.update(s, name, changes, keys))
    click.echo(f"{name}: {outcome}")
    _changed(who, "update", [name], f"{outcome} ({', '.join(sorted(changes))})")


@merchants_group.command("disable")
@click.argument("name")
@operator_option
def disable_command(name: str, operator: str | None) -> None:
    """Stop a stored merchant: its webhooks get 404 and no periodic job runs for it."""
    _set_enabled(name, False, operator_name(operator))


@merchants_group.command("enable")
@click.argument("name")
@operator_option
def enable_command(name: str, operator: str | None) -> None:
    """Run a disabled stored merchant again."""
    _set_enabled(name, True, operator_name(operator))


def _set_enabled(name: str, enabled: bool, operator: str) -> None:
    action = "enable" if enabled else "disable"
    changed = _run(lambda s, _keys: merchant_store.set_enabled(s, name, enabled))
    click.echo(f"{name}: {action + 'd' if changed else 'already ' + action + 'd'}")
    _changed(operator, action, [name] if changed else [], f"{action}d")


@merchants_group.command("show")
@click.argument("name")
def show_command(name: str) -> None:
    """A stored merchant's configuration as JSON, every secret masked."""
    click.echo(json.dumps(_run(lambda s, keys: merchant_store.show(s, name, keys)), indent=2, default=str))


@merchants_group.command("rotate-keys")
def rotate_keys_command() -> None:
    """Re-encrypt every stored merchant's secrets with the first key of MERCHANT_KEYS."""
    count = _run(merchant_store.rotate_keys)
    click.echo(f"{count} merchant(s) re-encrypted with the first key of MERCHANT_KEYS")


for _command in ONBOARDING:  # check, subscribe, backfill
    merchants_group.add_command(_command)
