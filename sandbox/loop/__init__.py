"""Local, in-memory fake of Loop Returns' API and webhook sender (shared/spec/loop-api.md, quirks included)."""
from sandbox.loop.app import create_app

__all__ = ["create_app"]
