"""Command line: ``start``, ``dev``, ``console``, ``download-files`` (``demo`` is agent.py's).

We parse arguments ourselves instead of handing ``sys.argv`` to LiveKit's Typer CLI
(``cli.run_app``), because the configuration must be validated before anything else runs,
and because that CLI is deprecated in 1.8: ``run_app``, ``dev`` and ``download-files``
each print a deprecation notice at users who did nothing wrong. ``start``/``dev`` still
run through LiveKit's own worker runner (signal handling, SIGTERM drain, health server),
and ``console`` through its console runner; only that runner's one "console mode is
deprecated" notice is dropped, matched exactly.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from agent.config import (
    LOG_LEVELS,
    ConfigError,
    Profile,
    Settings,
    load_dotenv_files,
    load_settings,
)

EXIT_CONFIG = 2

_DESCRIPTION = """\
LiveKit voice agent: Baseten streaming Whisper (STT) -> OpenAI-compatible LLM -> Cartesia (TTS).

Configuration comes from environment variables (see .env.example); `dev` and `console`
also read .env and .env.local from the current directory."""


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="agent.py",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def add_connection_flags(p: argparse.ArgumentParser) -> None:
        p.add_argument("--log-level", type=str.upper, choices=[*LOG_LEVELS, "WARN"])
        p.add_argument("--url", help="LiveKit server URL (default: $LIVEKIT_URL)")
        p.add_argument("--api-key", help="LiveKit API key (prefer $LIVEKIT_API_KEY)")
        p.add_argument("--api-secret", help="LiveKit API secret (prefer $LIVEKIT_API_SECRET)")

    start = sub.add_parser(
        "start",
        help="production worker: JSON logs, health check on :8081, drains on SIGTERM",
    )
    add_connection_flags(start)
    start.add_argument(
        "--drain-timeout", type=int, help="seconds to let live calls finish on SIGTERM"
    )

    dev = sub.add_parser(
        "dev", help="development worker: readable logs, reads .env/.env.local, no warm pool"
    )
    add_connection_flags(dev)

    console = sub.add_parser(
        "console", help="talk to the agent locally (mic/speaker, or --text), no LiveKit server"
    )
    console.add_argument(
        "--text",
        action="store_true",
        help="chat over stdin/stdout instead of mic/speaker (no audio devices or TTY needed)",
    )
    console.add_argument("--input-device", help="input device id or name substring")
    console.add_argument("--output-device", help="output device id or name substring")
    console.add_argument("--list-devices", action="store_true", help="list audio devices")
    console.add_argument("--record", action="store_true", help="record the session")
    console.add_argument("--log-level", type=str.upper, choices=[*LOG_LEVELS, "WARN"])

    sub.add_parser(
        "download-files",
        help="fetch/verify every model file the worker needs (run at image build time)",
    )
    sub.add_parser("demo", help="local end-to-end demo with stand-in services (source checkout)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    if args.command == "demo":
        # agent.py dispatches `demo` before reaching here; the package never imports localdev
        print("the demo runs from a source checkout: python agent.py demo", file=sys.stderr)
        return EXIT_CONFIG
    if args.command == "download-files":
        from agent.download import download_files

        return download_files()
    if args.command in ("start", "dev"):
        return _run_worker(args, dev=args.command == "dev")
    return _run_console(args)


def _settings_or_exit(profile: Profile) -> Settings | None:
    try:
        return load_settings(os.environ, profile=profile)
    except ConfigError as exc:
        for line in exc.problems:
            print(f"config error: {line}", file=sys.stderr)
        return None


def _apply_flag_overrides(args: argparse.Namespace) -> None:
    for flag, var in (
        ("url", "LIVEKIT_URL"),
        ("api_key", "LIVEKIT_API_KEY"),
        ("api_secret", "LIVEKIT_API_SECRET"),
        ("drain_timeout", "DRAIN_TIMEOUT"),
    ):
        value = getattr(args, flag, None)
        if value is not None:
            os.environ[var] = str(value)


def _log_level(args: argparse.Namespace, settings: Settings, *, default: str) -> str:
    level = args.log_level or settings.observability.log_level or default
    return "WARNING" if level == "WARN" else level


def _run_worker(args: argparse.Namespace, *, dev: bool) -> int:
    if dev:
        load_dotenv_files()
        # dev is where someone talks to the agent from the web client (web/), whose latency
        # bars are these records; an explicit PUBLISH_TURN_LATENCY=false still wins
        os.environ.setdefault("PUBLISH_TURN_LATENCY", "true")
    _apply_flag_overrides(args)
    settings = _settings_or_exit(Profile.WORKER)
    if settings is None:
        return EXIT_CONFIG

    # LiveKit imports the forkserver module lazily inside its event loop, which its own loop
    # monitor then reports as a >100 ms stall: import it here, before the loop starts.
    import multiprocessing.forkserver  # noqa: F401

    from livekit.agents.cli import cli as lk_cli
    from livekit.agents.cli import proto

    from agent.logs import configure_structlog, install_livekit_logging_hook
    from agent.worker import build_server, set_process_settings

    if dev:
        os.environ["LIVEKIT_DEV_MODE"] = "1"  # what LiveKit's own `dev` command sets
    configure_structlog()
    install_livekit_logging_hook(json=not dev)
    set_process_settings(settings)
    server = build_server(settings)
    lk_cli._run_worker(
        server=server,
        args=proto.CliArgs(
            log_level=_log_level(args, settings, default="DEBUG" if dev else "INFO"),
            log_format="colored" if dev else "json",
            dev=dev,
        ),
    )
    return 0


#: The exact notice LiveKit's console runner prints (cli/_legacy.py `_run_console`).
_CONSOLE_DEPRECATION_PREFIX = "console mode is deprecated and will be removed"


def _run_console(args: argparse.Namespace) -> int:
    from livekit.agents.cli import _legacy

    if args.list_devices:
        _legacy._print_audio_devices()
        return 0
    load_dotenv_files()
    settings = _settings_or_exit(Profile.CONSOLE)
    if settings is None:
        return EXIT_CONFIG
    if args.text:
        # our own stdin/stdout loop: LiveKit's text console needs PortAudio and a TTY
        from agent import text_console

        return text_console.main(settings, log_level=_log_level(args, settings, default="WARNING"))

    from agent.logs import RedactingFilter, configure_structlog
    from agent.worker import build_server, set_process_settings

    os.environ["LIVEKIT_DEV_MODE"] = "1"
    configure_structlog()
    set_process_settings(settings)
    server = build_server(settings)

    console = _legacy.AgentsConsole.get_instance()
    # the console renders logs with its own rich handler: redact there too
    console._log_handler.addFilter(RedactingFilter())
    original_print = console.print

    def print_without_deprecation(*objects: Any, **kwargs: Any) -> None:
        if (
            kwargs.get("tag") == "Deprecated"
            and objects
            and str(objects[0]).startswith(_CONSOLE_DEPRECATION_PREFIX)
        ):
            return
        original_print(*objects, **kwargs)

    console.print = print_without_deprecation  # type: ignore[method-assign]
    _legacy._run_console(
        server=server,
        # LiveKit's console takes a device index or a name substring (typed as str)
        input_device=_device(args.input_device),
        output_device=_device(args.output_device),
        mode="audio",
        record=args.record,
        log_level=_log_level(args, settings, default="INFO"),
    )
    logging.shutdown()
    return 0


def _device(value: str | None) -> Any:
    return int(value) if value and value.isdigit() else value
