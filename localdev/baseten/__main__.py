"""``python -m localdev.baseten``: run the local Baseten server until Ctrl-C."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

from localdev.baseten.engine import RecognitionEngine
from localdev.baseten.faults import FaultPlan
from localdev.baseten.scripted import ScriptedEngine
from localdev.baseten.sendlog import JsonlSendLog
from localdev.baseten.server import WEBSOCKET_ROUTES, LocalBasetenServer
from localdev.service import wait_for_stop_signal


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m localdev.baseten",
        description="Local server speaking Baseten's streaming-Whisper websocket protocol, "
        "with real offline recognition (pocketsphinx). Routes: " + ", ".join(WEBSOCKET_ROUTES),
    )
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default %(default)s)")
    p.add_argument(
        "--port",
        type=int,
        default=8765,
        help="port to bind, 0 = any free port (default %(default)s)",
    )
    p.add_argument(
        "--api-key",
        default=None,
        help="require 'Authorization: Api-Key|Bearer KEY' (default: no auth)",
    )
    p.add_argument(
        "--phrases",
        type=Path,
        default=None,
        help="file with one phrase per line: recognise only these (JSGF grammar); "
        "default is the full English language model",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=2,
        help="inference threads (default 2); 0 = inline on the event loop (scripted engine)",
    )
    p.add_argument(
        "--engine",
        choices=("pocketsphinx", "scripted"),
        default="pocketsphinx",
        help="recognition: real pocketsphinx (default) or 'scripted' (made-up words 'w1 w2 …' "
        "at ~zero CPU, for client load tests)",
    )
    p.add_argument(
        "--send-log",
        type=Path,
        default=None,
        metavar="FILE",
        help="append one JSON line per transcription sent (request path, text, is_final, "
        "wall-clock send time) to FILE, for client-latency measurements",
    )
    faults = p.add_argument_group("fault injection (all off by default)")
    faults.add_argument(
        "--inference-delay-ms", type=int, default=0, help="extra delay added to every transcription"
    )
    faults.add_argument(
        "--fail-first-upgrades",
        type=int,
        default=0,
        metavar="N",
        help="answer the first N upgrades with HTTP 503",
    )
    faults.add_argument(
        "--drop-after-frames",
        type=int,
        default=None,
        metavar="N",
        help="abort TCP (no close frame) after N audio frames",
    )
    faults.add_argument(
        "--drop-connections",
        type=int,
        default=1,
        metavar="M",
        help="how many connections --drop-after-frames applies to (default 1)",
    )
    faults.add_argument(
        "--stall-after-frames",
        type=int,
        default=None,
        metavar="N",
        help="stop reading/answering after N audio frames (TCP stays open)",
    )
    faults.add_argument(
        "--stall-connections",
        type=int,
        default=1,
        metavar="M",
        help="how many connections --stall-after-frames applies to (default 1)",
    )
    p.add_argument("--log-level", default="INFO", help="logging level (default %(default)s)")
    return p


def _read_phrases(path: Path | None) -> list[str] | None:
    if path is None:
        return None
    lines = [ln.strip() for ln in path.read_text().splitlines()]
    return [ln for ln in lines if ln and not ln.startswith("#")]


async def _serve(args: argparse.Namespace) -> None:
    plan = FaultPlan(
        reject_upgrades_with_503=args.fail_first_upgrades,
        drop_after_frames=args.drop_after_frames,
        drop_connections=args.drop_connections,
        stall_after_frames=args.stall_after_frames,
        stall_connections=args.stall_connections,
        inference_delay_s=args.inference_delay_ms / 1000,
    )
    engine: RecognitionEngine | None = ScriptedEngine() if args.engine == "scripted" else None
    send_log = JsonlSendLog(path=args.send_log) if args.send_log is not None else None
    async with LocalBasetenServer(
        api_key=args.api_key,
        phrases=_read_phrases(args.phrases),
        engine=engine,
        faults=plan,
        host=args.host,
        port=args.port,
        inference_workers=args.workers,
        on_transcription_sent=send_log,
    ) as srv:
        print(
            f"listening on {srv.url}{WEBSOCKET_ROUTES[1].replace('{env}', 'production')}",
            file=sys.stderr,
            flush=True,
        )
        await wait_for_stop_signal()
        logging.getLogger("localdev.baseten").info("shutting down")
    if send_log is not None:
        send_log.close()


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    asyncio.run(_serve(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
