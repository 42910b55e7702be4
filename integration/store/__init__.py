"""Storage: the models, the engine and sessions, the webhook inbox, retention and the status view."""
