"""`rlm-loop doctor`: check configuration and reach Loop, RLM, Redis and the database."""
from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import redis
from sqlalchemy import inspect as sql_inspect
from sqlalchemy import text

from cli.wiring import redact
from integration.errors import UpstreamError
from integration.infra import redis_pool
from integration.infra.embedded_redis import ensure_redis_url
from integration.loop.webhooks import WEBHOOK_TRIGGERS
from integration.merchants import ConfigError, Merchant, configured_from_environment, load_merchants
from integration.production import merchant_problems, settings_problems
from integration.settings import Settings
from integration.store.db import get_engine
from integration.store.schema import alembic_config
from integration.workflow.context import Context
from workers.names import QUEUES, publisher


@dataclass
class Check:
    name: str
    status: str  # ok | warn | FAIL
    detail: str


def run_checks(settings: Settings, context_for: Callable[[dict[str, Merchant]], Context]) -> list[Check]:
    """Every check, in order; `context_for(merchants)` builds a Context that publishes nothing."""
    checks: list[Check] = []
    checks += _check_environment(settings)
    try:
        merchants = load_merchants()
        checks.append(Check("merchants", "ok", f"{len(merchants)} configured: {', '.join(merchants)}"))
    except ConfigError as exc:
        merchants = {}
        checks.append(Check("merchants", "FAIL", str(exc)))
    checks += _check_database(settings)
    redis_url = _check_redis(settings, checks)
    if redis_url:
        checks += _check_processes(redis_url)
    ctx = context_for(merchants)
    from_env = configured_from_environment()
    for m in merchants.values():
        if settings.production:  # what every process refuses to start with (integration.production)
            checks += [Check(f"{m.name}: config", "FAIL", str(p)) for p in merchant_problems(m, from_env)]
        checks.append(_check_loop(ctx, m))
        checks += _check_rlm(ctx, m)
    return checks


def _check_environment(settings: Settings) -> list[Check]:
    env = "production" if settings.production else "development"
    checks = [Check("environment", "ok", f"APP_ENV={env}, DATA_DIR={settings.data_dir}")]
    if not settings.production:
        checks.append(Check("ADMIN_TOKEN", "ok" if settings.admin_token else "warn", "set" if
                            settings.admin_token else "unset: the operator API and pages are disabled"))
        return checks
    unfit = settings_problems(settings, settings.admin_token)
    if not any(p.subject == "ADMIN_TOKEN" for p in unfit):
        checks.append(Check("ADMIN_TOKEN", "ok", "set"))
    checks += [Check(p.subject, "FAIL", f"{p.text}; every process refuses to start") for p in unfit]
    if not os.environ.get("FLOWER_BASIC_AUTH"):
        checks.append(Check("FLOWER_BASIC_AUTH", "warn", "unset: the flower process refuses to start"))
    return checks


def _check_database(settings: Settings) -> list[Check]:
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    where = redact(settings.database_url)
    try:
        with get_engine(settings.database_url).connect() as conn:
            conn.execute(text("SELECT 1"))
            current = MigrationContext.configure(conn).get_current_revision()
            tables = set(sql_inspect(conn).get_table_names())
    except Exception as exc:  # any driver error: report it, the next checks still run
        return [Check("database", "FAIL", f"cannot connect to {where}: {type(exc).__name__}: {exc}")]
    head = ScriptDirectory.from_config(alembic_config(settings.database_url)).get_current_head()
    checks = [Check("database", "ok", f"connected to {where}")]
    if not settings.database_url.startswith("sqlite"):
        checks.append(_check_db_connections(settings.database_url))
    if current == head:
        checks.append(Check("schema", "ok", f"at migration {head}"))
    elif current is None and "returns" in tables:
        checks.append(Check("schema", "FAIL" if settings.production else "warn",
                            "created without migrations: run `rlm-loop init-db` to record it"))
    else:
        checks.append(Check("schema", "FAIL", f"at {current or 'nothing'}, head is {head}: "
                            "run `rlm-loop init-db` (on Heroku the release phase migrates)"))
    return checks


def _check_redis(settings: Settings, checks: list[Check]) -> str | None:
    url = ensure_redis_url(settings.data_dir) if settings.redis_url else None  # as the service uses it
    if not url:
        port_file = settings.data_dir / "valkey" / "port"
        if not port_file.exists():
            checks.append(Check("redis", "warn", "REDIS_URL unset and no embedded server yet "
                                "(the first process starts one)"))
            return None
        url = f"redis://127.0.0.1:{port_file.read_text().strip()}/0"
    client = redis_pool.client(url)
    try:
        waiting = {q: client.llen(q) for q in QUEUES}
    except redis.RedisError as exc:
        checks.append(Check("redis", "FAIL", f"cannot reach {redact(url)}: {exc}"))
        return None
    checks.append(Check("redis", "ok", f"{redact(url)}; queued: "
                        + ", ".join(f"{q} {n}" for q, n in waiting.items())))
    try:
        policy = client.config_get("maxmemory-policy").get("maxmemory-policy")
    except redis.ResponseError:
        policy = None  # managed plans may forbid CONFIG; their docs say which policy they use
    if policy not in (None, "noeviction"):
        checks.append(Check("redis policy", "FAIL", f"maxmemory-policy is {policy}: eviction silently "
                            "drops queued tasks; set it to noeviction"))
    checks.append(_check_redis_clients(client))
    return url


# Fewer free slots than this on Redis or PostgreSQL is a warning: a deploy (old and new processes
# overlap for a moment), `heroku run` and a redis-cli session each need some.
MIN_FREE = 3


def _headroom(name: str, used: int, limit: int | None, what: str, by_process: str, where: str) -> Check:
    breakdown = f" ({by_process})" if by_process else ""
    if limit is None:
        return Check(name, "ok", f"{used} {what} connected{breakdown}; limit unknown ({where}): "
                     "check the plan's limit")
    free = limit - used
    status = "FAIL" if free <= 0 else "warn" if free < MIN_FREE or used > 0.85 * limit else "ok"
    advice = {"ok": "", "warn": ": little headroom, see docs/operations.md, Connection budget",
              "FAIL": ": at the limit, new connections are refused; see docs/operations.md, Connection budget"}
    return Check(name, status, f"{used} of {limit} {what} in use, {free} free ({where}){breakdown}"
                 + advice[status])


def _summary(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def _check_redis_clients(client) -> Check:
    """connected_clients against maxclients, with the clients counted by process (their names)."""
    try:
        used = int(client.info("clients")["connected_clients"])
    except (redis.RedisError, KeyError, ValueError) as exc:
        return Check("redis clients", "warn", f"INFO clients refused: {exc}")
    try:
        limit: int | None = int(client.config_get("maxclients")["maxclients"])
        where = "maxclients"
    except (redis.RedisError, KeyError, ValueError, TypeError):
        limit, where = None, "the server refuses CONFIG GET maxclients"
    counts: dict[str, int] = {}
    try:
        for c in client.client_list():
            name = c.get("name") or ""
            key = name.split(":")[1] if name.startswith("rlm-loop:") and name.count(":") >= 2 else "other"
            counts[key] = counts.get(key, 0) + 1
    except redis.RedisError:
        pass  # CLIENT LIST may be refused too; the total is what counts
    return _headroom("redis clients", used, limit, "clients", _summary(counts), where)


def _check_db_connections(url: str) -> Check:
    """PostgreSQL's slots for this login: the tightest of the server's (max_connections less the
    superuser reserve, for a login without superuser rights), the role's and the database's
    connection limits, against the connections open right now."""
    query = text("""
        SELECT current_setting('max_connections')::int,
               current_setting('superuser_reserved_connections')::int,
               coalesce(current_setting('reserved_connections', true), '0')::int,
               r.rolsuper, r.rolconnlimit, d.datconnlimit,
               (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'),
               (SELECT count(*) FROM pg_stat_activity WHERE usename = current_user),
               (SELECT count(*) FROM pg_stat_activity WHERE datname = current_database())
        FROM pg_roles r, pg_database d
        WHERE r.rolname = current_user AND d.datname = current_database()""")
    try:
        with get_engine(url).connect() as conn:
            (max_conn, su_reserved, reserved, superuser, role_limit, db_limit,
             total, mine, in_db) = conn.execute(query).one()
            by_app: dict[str, int] = dict(conn.execute(text(
                "SELECT coalesce(nullif(application_name, ''), 'other'), count(*) FROM pg_stat_activity "
                "WHERE usename = current_user GROUP BY 1")).all())
    except Exception as exc:  # a view or setting this plan hides: say so, do not fail
        return Check("database connections", "warn", f"cannot read the connection limits: {type(exc).__name__}")
    server = max_conn - (0 if superuser else su_reserved + reserved)
    options = [(server - total, total, server,
                f"max_connections {max_conn}" + ("" if superuser else f" less {su_reserved + reserved} reserved"))]
    if role_limit is not None and role_limit >= 0:
        options.append((role_limit - mine, mine, role_limit, "this login's connection limit"))
    if db_limit is not None and db_limit >= 0:
        options.append((db_limit - in_db, in_db, db_limit, "the database's connection limit"))
    _, used, limit, where = min(options)
    counts = {name.removeprefix("rlm-loop:"): n for name, n in by_app.items()}
    return _headroom("database connections", used, limit, "connections", _summary(counts), where)


def _check_processes(redis_url: str) -> list[Check]:
    """Is every queue consumed by some worker, and is a beat running?"""
    app = publisher(redis_url)
    try:
        answers = app.control.inspect(timeout=1.5).active_queues() or {}
    except Exception as exc:
        return [Check("workers", "FAIL", f"cannot ask the workers: {exc}")]
    finally:
        app.close()
    consumers = {q: sorted(w for w, queues in answers.items() if q in {x["name"] for x in queues})
                 for q in QUEUES}
    checks = []
    for queue, workers in consumers.items():
        checks.append(Check(f"queue {queue}", "ok" if workers else "FAIL",
                            f"consumed by {', '.join(workers)}" if workers else
                            "no worker consumes it: start or scale the worker processes"))
    lock = f"{os.environ.get('REDBEAT_KEY_PREFIX', 'redbeat')}:lock"
    beat = redis_pool.client(redis_url).exists(lock)
    checks.append(Check("beat", "ok" if beat else "FAIL", "running (holds the RedBeat lock)" if beat
                        else "no beat is running: receipts are not polled, nothing is swept"))
    return checks


def _check_loop(ctx: Context, m: Merchant) -> Check:
    name = f"{m.name}: Loop"
    try:
        hooks = ctx.loop(m).list_webhooks()
    except UpstreamError as exc:
        return Check(name, "FAIL", f"{m.loop_base_url}: {_upstream(exc)}")
    wanted = {(topic, trigger) for topic, triggers in WEBHOOK_TRIGGERS.items() for trigger in triggers}
    active = {(h.get("topic"), h.get("trigger")) for h in hooks if h.get("status") == "active"
              and str(h.get("url", "")).endswith(f"/webhooks/loop/{m.name}")}
    missing = sorted(trigger for _, trigger in wanted - active)
    if missing:
        return Check(name, "warn", f"API key accepted; no active webhook to /webhooks/loop/{m.name} "
                     f"for {', '.join(missing)} (the Loop returns pull still finds them, later)")
    return Check(name, "ok", f"API key accepted; {len(wanted)} webhooks active")


def _check_rlm(ctx: Context, m: Merchant) -> list[Check]:
    name = f"{m.name}: RLM"
    rlm = ctx.rlm(m)
    try:
        warehouses = rlm.t.call("GET", "/warehouses", idempotent=True)[1]["data"]
        divisions = rlm.t.call("GET", "/divisions", idempotent=True)[1]["data"]
    except UpstreamError as exc:
        return [Check(name, "FAIL", f"{m.rlm_base_url} company {m.rlm_company}: {_upstream(exc)}")]
    checks = [Check(name, "ok", f"credentials accepted for company {m.rlm_company}")]
    warehouse = next((w for w in warehouses if w.get("warehouse_number") == m.warehouse_number), None)
    if warehouse is None or warehouse.get("accepts_returns") is False:
        checks.append(Check(f"{m.name}: warehouse", "FAIL", f"RLM_WAREHOUSE {m.warehouse_number} "
                            + ("does not exist" if warehouse is None else "does not accept returns")))
    if not any(d.get("division_number") == m.division_number for d in divisions):
        checks.append(Check(f"{m.name}: division", "FAIL", f"RLM_DIVISION {m.division_number} does not exist"))
    return checks


def _upstream(exc: UpstreamError) -> str:
    if exc.status in (401, 403):
        return f"credentials refused ({exc.status}: {exc.message})"
    if exc.status is None:
        return f"unreachable ({exc.message})"
    return f"{exc.message} (HTTP {exc.status})"

