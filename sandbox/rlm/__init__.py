"""Local in-memory fake of RLM's JSON REST API (docs/rlm-api.md Part B), served by Flask."""
from sandbox.rlm.app import create_app

__all__ = ["create_app"]
