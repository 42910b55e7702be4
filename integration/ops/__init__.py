"""What operators do to the service, shared by the command line (cli/) and the pages (web/):
each action returns a result object that says what happened; its caller decides how to show it."""
