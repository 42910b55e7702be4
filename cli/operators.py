"""Who runs an operator command: `--operator NAME`, else OPERATOR_NAME, else the OS user name.

The name goes on the return's timeline and in the log line of every manual action (retry,
redecide, replay). The command line has the database's credentials, so the name is recorded as
given; it must be 1 to 40 of a-z 0-9 . _ - (an operator's name, never a shopper's data).
"""
from __future__ import annotations

import getpass
import os

import click

from integration.settings import is_operator_name

operator_option = click.option(
    "--operator", metavar="NAME",
    help="Who is acting, recorded on the timeline and in the logs (default: $OPERATOR_NAME, "
         "else your OS user name).")


def _os_user() -> str:
    try:
        return getpass.getuser().lower()
    except (KeyError, OSError):  # no USER/LOGNAME and no passwd entry (some containers)
        return ""


def operator_name(given: str | None) -> str:
    name = given or os.environ.get("OPERATOR_NAME") or _os_user()
    if not name:
        raise click.ClickException("who is acting? pass --operator NAME or set OPERATOR_NAME")
    if not is_operator_name(name):
        raise click.ClickException(f"operator name {name!r} is not 1 to 40 of a-z 0-9 . _ -: "
                                   "pass --operator NAME or set OPERATOR_NAME")
    return name
