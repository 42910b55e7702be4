"""The operator command line: `rlm-loop <command>`, or `python -m cli <command>` where the
project is not pip-installed (Heroku runs it from the slug's checkout). docs/operations.md."""
