"""`python -m cli <command>`: the same commands as `rlm-loop <command>`."""
from cli.main import main

main()
