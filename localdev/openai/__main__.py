"""Run the OpenAI stand-in: ``python -m localdev.openai --port 8089 --ttft-ms 300``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os

from localdev.openai.server import LocalOpenAIServer, replies_from_cli
from localdev.service import wait_for_stop_signal


def _parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m localdev.openai", description=__doc__)
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default loopback)")
    p.add_argument("--port", type=int, default=0, help="TCP port; 0 picks a free one")
    p.add_argument("--ttft-ms", type=float, default=0.0, help="time to first token, ms")
    p.add_argument("--token-delay-ms", type=float, default=0.0, help="delay between tokens, ms")
    p.add_argument(
        "--reply",
        action="extend",
        nargs="+",
        metavar="TEXT",
        help="scripted reply; repeat to cycle several (default: acknowledge the user)",
    )
    p.add_argument(
        "--api-key-env",
        metavar="VAR",
        help="require Bearer auth with the key read from this environment variable",
    )
    p.add_argument("--log-level", default="INFO")
    return p.parse_args(argv)


async def _serve(args: argparse.Namespace) -> None:
    api_key = os.environ[args.api_key_env] if args.api_key_env else None
    async with LocalOpenAIServer(
        replies=replies_from_cli(args.reply),
        ttft_s=args.ttft_ms / 1000,
        token_delay_s=args.token_delay_ms / 1000,
        api_key=api_key,
        host=args.host,
        port=args.port,
    ) as srv:
        # Printed so scripts that passed --port 0 can read the URL back.
        print(srv.base_url, flush=True)
        await wait_for_stop_signal()
        logging.getLogger("localdev.openai").info("shutting down")


def main(argv: list[str] | None = None) -> None:
    args = _parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(message)s")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args))


if __name__ == "__main__":
    main()
