"""Command line: `rlm-loop <command>` (or `python -m stack.cli <command>`); docs/operations.md.

Running it: demo, up, init-db. One return: status, retry, redecide, replay. The service:
backfill, merchants, doctor. Commands read the same environment as the service, talk to the
database directly, and publish tasks by name on the broker (never importing the workers).
"""
from __future__ import annotations

import json
import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import click
from sqlalchemy import inspect as sql_inspect
from sqlalchemy import select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from integration.infra import redis_pool
from integration.infra.embedded_redis import (
    ensure_redis_url,
    start_valkey,
    valkey_binary,
    wait_for_redis,
)
from integration.infra.ratelimit import TokenBucket, bucket_name
from integration.loop.webhooks import WEBHOOK_TRIGGERS
from integration.merchants import ConfigError, Merchant, configured_from_environment, load_merchants
from integration.ops import actions
from integration.ops.actions import ActionResult, Outcome
from integration.production import RefusedToStart, merchant_problems, refuse_to_run_wrong
from integration.settings import Settings, load_settings
from integration.store.db import get_engine, session_factory
from integration.store.models import Return
from integration.store.schema import migrate
from integration.store.status import return_view
from integration.workflow.context import Context
from integration.workflow.pipeline import ingest_return
from integration.workflow.rules import label
from workers.names import STEP_TASK_NAMES, publisher

from .demo import SCENARIOS, run_demo
from .doctor import _redact, run_checks
from .processes import DATABASES, FAST_ENV, FIXED_PORTS, wait_http

ROOT = Path(__file__).resolve().parent.parent
DEV_VALKEY_PORT = 6380  # Procfile.dev's broker (6379 is left to any Redis already installed)


@click.group()
def main() -> None:
    """RLM ⇄ Loop returns integration."""
    if not redis_pool.role():
        redis_pool.configure("cli")  # names its Redis and database connections


# --- wiring (fresh on every command: tests run several in one process) ----------------------
def _settings_and_merchants() -> tuple[Settings, dict[str, Merchant]]:
    try:
        return load_settings(), load_merchants()
    except ConfigError as exc:
        raise click.ClickException(f"merchant configuration: {exc}") from None


def _context(settings: Settings, merchants: dict[str, Merchant], publish: bool = True) -> Context:
    """The service's Context, publishing steps by task name and sharing the Loop rate limit."""
    url = ensure_redis_url(settings.data_dir) if publish else None
    app = publisher(url) if url else None

    def enqueue(step: str, target_id) -> None:
        if app is None:
            raise click.ClickException("this command does not publish tasks")
        app.send_task(STEP_TASK_NAMES[step], args=[target_id])

    def limiter(merchant: Merchant) -> TokenBucket:
        return TokenBucket(redis_pool.client(url), bucket_name("loop", merchant.loop_api_key),
                           settings.loop_requests_per_minute)

    return Context(settings=settings, merchants=merchants,
                   sessions=session_factory(settings.database_url), enqueue=enqueue,
                   loop_limiter_for=limiter if url else None)


@contextmanager
def _database_errors(url: str) -> Iterator[None]:
    """A database that cannot be reached (or has no driver here) ends the command with one line."""
    where = _redact(url)
    try:
        yield
    except ArgumentError:
        raise click.ClickException(f"DATABASE_URL is not a database URL: {where}") from None
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] not in ("psycopg", "psycopg2"):
            raise
        raise click.ClickException(f"no PostgreSQL driver here for {where}: "  # the `postgres` extra
                                   "pip install 'rlm-loop-returns[postgres]'") from None
    except SQLAlchemyError as exc:
        lines = str(getattr(exc, "orig", None) or exc).strip().splitlines()
        raise click.ClickException(f"cannot use the database {where}: "
                                   f"{lines[0] if lines else type(exc).__name__}") from None


def _require_database(url: str) -> None:
    """Stop with what to do, not a traceback, when the database is missing, unreachable or empty.

    A SQLite file that does not exist is not created here (connecting would make an empty one).
    """
    with _database_errors(url):
        parsed = make_url(url)
        if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
            path = Path(parsed.database).resolve()
            if not path.exists():
                raise click.ClickException(f"no database at {path} (set DATABASE_URL, or DATA_DIR): "
                                           "run `rlm-loop init-db` to create it")
        with get_engine(url).connect() as conn:
            tables = set(sql_inspect(conn).get_table_names())
    if "returns" not in tables:
        raise click.ClickException(f"the database has no tables yet ({_redact(url)}): "
                                   "run `rlm-loop init-db`")


def _merchant_of(ctx: Context, loop_return_id: str, merchant: str | None) -> str:
    """The merchant of a Loop return id: given, or the only one that has it."""
    if merchant:
        return merchant
    with ctx.sessions() as s:
        owners = s.scalars(select(Return.merchant).where(Return.loop_return_id == loop_return_id)).all()
    if not owners:
        raise click.ClickException(f"no return {loop_return_id} in the database")
    if len(owners) > 1:
        raise click.ClickException(f"return {loop_return_id} exists for merchants {', '.join(owners)}: "
                                   "add --merchant")
    return owners[0]


merchant_option = click.option("--merchant", help="Merchant name (needed only if the id is ambiguous).")
db_option = click.option("--db", "database", type=click.Choice(DATABASES), default="sqlite", show_default=True,
                         help="The stack's database: a SQLite file in the workdir, or a throwaway "
                              "PostgreSQL cluster started (and removed) with the stack.")


# --- running it ------------------------------------------------------------------------------
@main.command()
@click.option("--returns", "count", default=len(SCENARIOS), show_default=True,
              help="How many sample returns (scenarios repeat in turn).")
@click.option("--report", "report_path", type=click.Path(dir_okay=False), help="Write a JSON report here.")
@click.option("--workdir", type=click.Path(file_okay=False), help="Keep data and logs here.")
@db_option
def demo(count: int, report_path: str | None, workdir: str | None, database: str) -> None:
    """Start everything, drive sample returns through the workflow, check each outcome."""
    result = run_demo(count, report_path, workdir, database=database)
    summary = result["summary"]
    sys.exit(0 if summary["matched"] == summary["total"] else 1)


@main.command()
@click.option("--returns", "count", default=500, show_default=True, help="How many returns.")
@click.option("--seed", default=1, show_default=True, help="Seed for the faults and disruptions.")
@click.option("--workdir", type=click.Path(file_okay=False), help="Keep data and logs here.")
@db_option
def chaos(count: int, seed: int, workdir: str | None, database: str) -> None:
    """Drive returns through the real stack while injecting faults; check nothing is lost or doubled."""
    from .chaos import run_chaos

    sys.exit(0 if run_chaos(count, seed, workdir, database=database).ok else 1)


@main.command()
@click.option("--workdir", default="var/up", show_default=True, type=click.Path(file_okay=False))
def up(workdir: str) -> None:
    """Run Procfile.dev with honcho on the embedded defaults until Ctrl-C.

    The production Procfile's processes plus an embedded Valkey and both sandboxes, on fixed
    ports: receiver :8000, Loop sandbox :8001, RLM sandbox :8002, Flower :5555.
    """
    _require_checkout_with_honcho()
    data = Path(workdir).resolve()
    env = dict(os.environ)
    env.update({
        "DATA_DIR": str(data),
        "DATABASE_URL": f"sqlite:///{data / 'integration.db'}",
        "REDIS_URL": f"redis://127.0.0.1:{DEV_VALKEY_PORT}/0",
        "LOOP_BASE_URL": f"http://127.0.0.1:{FIXED_PORTS['loop']}",
        "RLM_BASE_URL": f"http://127.0.0.1:{FIXED_PORTS['rlm']}",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        "PYTHONUNBUFFERED": "1",
    })
    for key, value in {**FAST_ENV, "ADMIN_TOKEN": "demo-admin-token", "LOG_FORMAT": "text"}.items():
        env.setdefault(key, value)
    migrate(env["DATABASE_URL"])
    click.echo(f"receiver :8000 (pages /ops, token {env['ADMIN_TOKEN']}), Loop sandbox :8001, "
               f"RLM sandbox :8002, Flower :5555; data in {data}")
    os.chdir(ROOT)
    # `-e /dev/null`: the embedded defaults, whatever a local .env holds for production.
    os.execve(sys.executable, [sys.executable, "-m", "honcho", "-f", "Procfile.dev", "-e", os.devnull,
                               "start"], env)


def _require_checkout_with_honcho() -> None:
    """`up` is for development: it runs a checkout's Procfile.dev under honcho (a dev dependency).

    Production runs the Procfile's processes under the platform's own supervisor, so neither
    honcho nor the sandboxes that Procfile.dev starts belong in the runtime dependencies.
    """
    import importlib.util

    if not (ROOT / "Procfile.dev").exists():
        raise click.ClickException("`up` is for development: it runs Procfile.dev from a checkout of the "
                                   "repository (there, `make up`); an installed package runs the "
                                   "Procfile's processes under your process manager")
    if importlib.util.find_spec("honcho") is None:
        raise click.ClickException("`up` is for development and needs honcho: "
                                   "pip install 'rlm-loop-returns[dev]' (or `make up` in the checkout)")


@main.command("init-db")
def init_db() -> None:
    """Create or upgrade the database schema (alembic upgrade head)."""
    settings = load_settings()
    try:
        refuse_to_run_wrong(settings, load_merchants)
    except RefusedToStart as exc:
        raise click.ClickException(str(exc)) from None
    with _database_errors(settings.database_url):
        click.echo(migrate(settings.database_url))


@main.group()
def dev() -> None:
    """Processes of Procfile.dev (local development only)."""


@dev.command("valkey")
@click.option("--port", default=DEV_VALKEY_PORT, show_default=True)
def dev_valkey(port: int) -> None:
    """The embedded Redis-compatible server, in the foreground, data under $DATA_DIR/valkey."""
    proc, url = start_valkey(load_settings().data_dir / "valkey", port)
    click.echo(f"Valkey ({valkey_binary()}) at {url}")
    signal.signal(signal.SIGTERM, lambda *_: proc.terminate())
    signal.signal(signal.SIGINT, lambda *_: proc.terminate())
    sys.exit(proc.wait())


@dev.command("wait-for-broker")
@click.option("--timeout", default=30.0, show_default=True)
def dev_wait_for_broker(timeout: float) -> None:
    """Wait until REDIS_URL answers (beat exits at once if the broker is not up yet)."""
    wait_for_redis(os.environ["REDIS_URL"], timeout=timeout)


@dev.command("loop-sandbox")
@click.option("--port", default=FIXED_PORTS["loop"], show_default=True)
@click.option("--receiver", default=f"http://127.0.0.1:{FIXED_PORTS['web']}/webhooks/loop/demo",
              show_default=True, help="Where the sandbox's webhooks go.")
def dev_loop_sandbox(port: int, receiver: str) -> None:
    """The Loop sandbox, with its webhooks subscribed to the receiver once it answers."""
    from integration.loop.client import LoopClient
    from sandbox.common import serve_forever
    from sandbox.loop.app import create_app

    app = create_app()
    base = f"http://127.0.0.1:{port}"

    def subscribe() -> None:
        wait_http(f"{base}/_sim/clock")
        LoopClient(base, os.environ.get("LOOP_API_KEY", "demo-loop-key")).ensure_webhooks(
            receiver, WEBHOOK_TRIGGERS)
        click.echo(f"Loop sandbox webhooks -> {receiver}")

    threading.Thread(target=subscribe, daemon=True).start()
    try:
        serve_forever(app, "127.0.0.1", port)
    finally:
        app.extensions["loop_sandbox"].shutdown()


# --- one return ------------------------------------------------------------------------------
@main.command()
@click.argument("loop_return_id")
@merchant_option
@click.option("--json", "as_json", is_flag=True, help="The full record as JSON (as the API answers).")
def status(loop_return_id: str, merchant: str | None, as_json: bool) -> None:
    """What happened to a return and why: state, RMA, decision, receipts, timeline."""
    settings, merchants = _settings_and_merchants()
    _require_database(settings.database_url)
    ctx = _context(settings, merchants, publish=False)
    name = _merchant_of(ctx, loop_return_id, merchant)
    with ctx.sessions() as s:
        ret = s.scalar(select(Return).where(Return.merchant == name,
                                            Return.loop_return_id == loop_return_id))
        if ret is None:
            raise click.ClickException(f"no return {loop_return_id} for merchant {name}")
        view = return_view(ret)
    click.echo(json.dumps(view, indent=2) if as_json else _describe(view))


def _waiting(waiting: dict | None) -> str:
    if not waiting:
        return "-"
    return (f"for {waiting['for'].replace('_', ' ')}: next look {waiting['next_check_at'][:19]}, "
            f"parked if nothing by {waiting['until'][:19]}")


def _describe(view: dict) -> str:
    decision = view["decision"] or {}
    rows = [
        ("return", f"{view['loop_return_id']} (merchant {view['merchant']}, order {view['order_name'] or '-'})"),
        ("state", f"{view['state']}   (Loop: {view['loop_state'] or '-'})"),
        ("RMA", str(view["rma_number"] or "-")),
        ("decision", decision.get("action") or "-"),
        ("rules fired", ", ".join(decision.get("rules_fired") or []) or "-"),
        ("reasons", "; ".join(decision.get("reasons") or []) or "-"),
        ("Loop note", decision.get("loop_note") or "-"),
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


@main.command()
@click.argument("loop_return_id")
@merchant_option
def retry(loop_return_id: str, merchant: str | None) -> None:
    """Resume a parked (needs_attention) return at the step that failed."""
    _operator_action(actions.retry_return, loop_return_id, merchant)


@main.command()
@click.argument("loop_return_id")
@merchant_option
def redecide(loop_return_id: str, merchant: str | None) -> None:
    """Run the decision again for a return not yet acted on in Loop."""
    _operator_action(actions.redecide_return, loop_return_id, merchant)


def _operator_action(action, loop_return_id: str, merchant: str | None) -> None:
    settings, merchants = _settings_and_merchants()
    _require_database(settings.database_url)
    ctx = _context(settings, merchants)
    _show(action(ctx, _merchant_of(ctx, loop_return_id, merchant), loop_return_id))


@main.command()
@click.argument("event_id", type=int)
def replay(event_id: int) -> None:
    """Hand a stored webhook event to the pipeline again."""
    settings, merchants = _settings_and_merchants()
    _require_database(settings.database_url)
    _show(actions.replay_event(_context(settings, merchants), event_id))


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
    settings, merchants = _settings_and_merchants()
    _require_database(settings.database_url)
    ctx = _context(settings, merchants)
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


@main.command("merchants")
def list_merchants() -> None:
    """List the merchants and validate their configuration (exit 1 if it is invalid)."""
    settings, merchants = _settings_and_merchants()
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
        unfit = merchant_problems(m, configured_from_environment()) if settings.production else []
        for problem in unfit:
            problems += 1
            click.echo(f"  FAIL   {problem}")
    if problems:
        sys.exit(1)


@main.command()
def doctor() -> None:
    """Check configuration and reach Loop, RLM, Redis and the database: one line per check."""
    settings = load_settings()
    checks = run_checks(settings, lambda merchants: _context(settings, merchants, publish=False))
    for c in checks:
        click.echo(f"{c.status:<4}  {c.name:<20} {c.detail}")
    failed = sum(c.status == "FAIL" for c in checks)
    click.echo(f"\n{failed} problem(s) found" if failed else "\nall checks passed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
