"""RLM Apparel Software: the API client and the address codes it insists on (docs/rlm-api.md)."""
