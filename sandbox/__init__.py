"""Local fakes of Loop Returns and RLM, faithful to ../shared/spec (quirks included)."""
