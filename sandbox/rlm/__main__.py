"""`python -m sandbox.rlm --host 127.0.0.1 --port 8002` serves the RLM sandbox in the foreground."""
from __future__ import annotations

import argparse

from sandbox.common import serve_forever
from sandbox.rlm.app import create_app


def main() -> None:
    parser = argparse.ArgumentParser(description="RLM sandbox (fake RLM JSON API)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8002)
    args = parser.parse_args()
    print(f"RLM sandbox on http://{args.host}:{args.port}/api/v1/companies/90", flush=True)
    serve_forever(create_app(), args.host, args.port)


if __name__ == "__main__":
    main()
