"""Runs the whole stack on one machine (demo, `make up`, end-to-end tests)."""
