"""Plumbing shared by every process: HTTP, Redis (pool, TLS, locks, rate limit, embedded Valkey), logs."""
