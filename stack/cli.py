"""Command line: `rlm-loop demo`, `rlm-loop up`."""
from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

import click

from .demo import SCENARIOS, run_demo
from .processes import Stack


@click.group()
def main() -> None:
    """RLM ⇄ Loop returns integration."""


@main.command()
@click.option("--returns", "count", default=len(SCENARIOS), show_default=True,
              help="How many sample returns (scenarios repeat in turn).")
@click.option("--report", "report_path", type=click.Path(dir_okay=False), help="Write a JSON report here.")
@click.option("--workdir", type=click.Path(file_okay=False), help="Keep data and logs here.")
def demo(count: int, report_path: str | None, workdir: str | None) -> None:
    """Start everything, drive sample returns through the workflow, check each outcome."""
    result = run_demo(count, report_path, workdir)
    summary = result["summary"]
    sys.exit(0 if summary["matched"] == summary["total"] else 1)


@main.command()
@click.option("--workdir", default="var/up", show_default=True, type=click.Path(file_okay=False))
def up(workdir: str) -> None:
    """Run the stack in the foreground on the fixed ports until Ctrl-C."""
    stack = Stack(Path(workdir), fixed_ports=True, flower=True)
    stack.start()
    click.echo(f"receiver   {stack.url('web')}  (POST /webhooks/loop/demo, GET /api/returns/<id>)")
    click.echo(f"Loop       {stack.url('loop')}/api/v1   (sandbox controls under /_sim)")
    click.echo(f"RLM        {stack.url('rlm')}/api/v1/companies/90")
    click.echo(f"Flower     {stack.url('flower')}")
    click.echo(f"logs       {Path(workdir) / 'logs'}      Ctrl-C to stop")
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
    try:
        while not stopping:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        click.echo("stopping…")
        stack.stop()


@main.command("init-db")
def init_db() -> None:
    """Create the database schema (the Procfile's release phase)."""
    from integration.db import get_engine
    from integration.models import create_all
    from integration.settings import load_settings

    create_all(get_engine(load_settings().database_url))
    click.echo("database schema is up to date")


if __name__ == "__main__":
    main()
