"""Celery app and tasks: thin wrappers, built from the step table, that hand ids to integration.workflow."""
