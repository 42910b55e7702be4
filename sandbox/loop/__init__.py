"""Local, in-memory fake of Loop Returns' API and webhook sender (docs/loop-api.md, quirks included)."""
from sandbox.loop.app import create_app

__all__ = ["create_app"]
