"""The local stack's command line: `python -m stack.cli <command>` (the Makefile, Procfile.dev).

demo, chaos and up start the real processes on this machine; `dev` runs Procfile.dev's own
processes. Every operator command of `rlm-loop` (cli/) is here too, so one entry point serves a
local stack: `python -m stack.cli status 52393555`.
"""
from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path

import click

from cli.main import main as operator_commands
from cli.wiring import name_connections
from integration.infra.embedded_redis import start_valkey, valkey_binary, wait_for_redis
from integration.loop.webhooks import WEBHOOK_TRIGGERS
from integration.settings import load_settings
from integration.store.schema import migrate

from .demo import SCENARIOS, run_demo
from .processes import DATABASES, FAST_ENV, FIXED_PORTS, wait_http

ROOT = Path(__file__).resolve().parent.parent
DEV_VALKEY_PORT = 6380  # Procfile.dev's broker (6379 is left to any Redis already installed)


@click.group()
def main() -> None:
    """RLM ⇄ Loop returns integration: the local stack, and the operator commands."""
    name_connections()


# Every `rlm-loop` command too (their own group's callback does not run here: ours names
# the connections the same way).
for _command in operator_commands.commands.values():
    main.add_command(_command)

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


if __name__ == "__main__":
    main()
