"""Local fakes of Loop Returns and RLM, faithful to the contracts in docs/ (quirks included)."""
