"""integration/loop: the Loop client against the Loop sandbox, webhooks, signatures."""
