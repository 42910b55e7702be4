"""Loop Returns: the API client, webhook signatures and what we accept from webhooks (docs/loop-api.md)."""
