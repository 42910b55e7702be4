"""Celery app and tasks: thin wrappers that hand ids to integration.workflow.pipeline."""
