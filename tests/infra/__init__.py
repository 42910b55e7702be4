"""integration/infra: HTTP classification, the shared rate limit, Redis helpers, scrubbing."""
