"""`python -m sandbox.loop --host 127.0.0.1 --port 8001` serves the Loop sandbox."""
from __future__ import annotations

import argparse

from sandbox.common import serve_forever
from sandbox.loop.app import create_app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m sandbox.loop", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    args = parser.parse_args(argv)
    app = create_app()
    print(f"Loop sandbox on http://{args.host}:{args.port}/api/v1 (controls under /_sim)", flush=True)
    try:
        serve_forever(app, args.host, args.port)
    finally:
        app.extensions["loop_sandbox"].shutdown()


if __name__ == "__main__":
    main()
