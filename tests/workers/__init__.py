"""workers: the task layer."""
