"""The sandboxes over HTTP and clients pointed at them (tests/sandboxes.py)."""
from tests.sandboxes import *  # noqa: F403  (fixtures)
