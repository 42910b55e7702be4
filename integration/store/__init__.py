"""Storage: the models, the engine and sessions, the webhook inbox, retention, the status view,
and the schema's migrations."""
