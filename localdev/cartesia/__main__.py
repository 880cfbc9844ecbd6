"""Run the Cartesia stand-in: ``python -m localdev.cartesia --port 8090 --ttfb-ms 150``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os

from localdev.cartesia.server import LocalCartesiaServer
from localdev.service import wait_for_stop_signal


def _parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m localdev.cartesia", description=__doc__)
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default loopback)")
    p.add_argument("--port", type=int, default=0, help="TCP port; 0 picks a free one")
    p.add_argument("--ttfb-ms", type=float, default=0.0, help="minimum time to first audio, ms")
    p.add_argument(
        "--api-key-env",
        metavar="VAR",
        help="require this key (read from the named environment variable, never argv)",
    )
    p.add_argument("--log-level", default="INFO")
    return p.parse_args(argv)


async def _serve(args: argparse.Namespace) -> None:
    api_key = os.environ[args.api_key_env] if args.api_key_env else None
    async with LocalCartesiaServer(
        ttfb_s=args.ttfb_ms / 1000, api_key=api_key, host=args.host, port=args.port
    ) as srv:
        # Printed so scripts that passed --port 0 can read the URL back.
        print(srv.base_url, flush=True)
        await wait_for_stop_signal()
        logging.getLogger("localdev.cartesia").info("shutting down")


def main(argv: list[str] | None = None) -> None:
    args = _parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(message)s")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args))


if __name__ == "__main__":
    main()
