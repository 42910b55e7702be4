"""integration/store: retention, the inbox."""
