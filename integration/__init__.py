"""Domain logic and the Loop and RLM clients. No Flask or Celery imports here."""
