"""``download-files``: fetch and verify every model file the worker loads at runtime.

Run at image build time so a job never downloads or fails to find weights on its first
call. With our dependency set nothing needs the network: Silero's ONNX weights ship in
``livekit-plugins-silero`` and the local turn-detector model is compiled into
``livekit.local_inference``. We still (1) run every registered plugin's own
``download_files()`` so a plugin added later gets its files cached, and (2) *load* each
model once, so a broken wheel or a missing native library fails the build, not the call.
No credentials are read.
"""

from __future__ import annotations

import importlib
import logging
import sys
import time
from collections.abc import Callable

from agent.logs import configure_structlog, get_logger, install_on_root_handlers

log = get_logger("agent.download")

#: Plugin packages the worker imports (importing registers them with LiveKit).
PLUGIN_MODULES = (
    "livekit.plugins.silero",
    "livekit.plugins.openai",
    "livekit.plugins.cartesia",
    "plugins.baseten_stt",
)


def _load_silero() -> None:
    from livekit.plugins import silero

    silero.VAD.load()


def _load_turn_detector() -> None:
    from livekit.local_inference import init_eot

    init_eot()


CHECKS: tuple[tuple[str, Callable[[], None]], ...] = (
    ("silero VAD", _load_silero),
    ("local turn detector (turn-detector-v1-mini)", _load_turn_detector),
)


def download_files() -> int:
    """Returns 0 when every plugin's files are present and every model loads, else 1."""
    handler = logging.StreamHandler(sys.stderr)
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    configure_structlog()
    install_on_root_handlers(json=False, colors=sys.stderr.isatty(), handlers=[handler])

    from livekit.agents import Plugin

    failed = 0
    for module in PLUGIN_MODULES:
        try:
            importlib.import_module(module)
        except Exception as exc:
            log.error("plugin import failed", module=module, error=str(exc))
            failed += 1
    for plugin in Plugin.registered_plugins:
        try:
            plugin.download_files()
        except Exception as exc:
            log.error("download failed", plugin=plugin.package, error=str(exc))
            failed += 1
        else:
            log.info("plugin files ready", plugin=plugin.package)
    for name, check in CHECKS:
        started = time.perf_counter()
        try:
            check()
        except Exception as exc:
            log.error("model failed to load", model=name, error=str(exc))
            failed += 1
        else:
            log.info("model ready", model=name, load_s=round(time.perf_counter() - started, 2))
    if failed:
        log.error("download-files failed", problems=failed)
        return 1
    log.info("all model files ready")
    return 0
