"""integration/rlm: the RLM client against the RLM sandbox."""
