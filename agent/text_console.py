"""``console --text``: chat with the agent over stdin/stdout, headless.

LiveKit's console needs PortAudio even in text mode (it validates audio devices first)
and a TTY for its key-by-key prompt, so it cannot run in CI, over ssh pipes or in a
container. This is the same agent (same settings, LLM, turn options and Assistant)
driven through AgentSession's public text API: one line in = one user turn, the
assistant's reply printed as ``agent: ...``. Logs go to stderr so stdout stays the
conversation. Room-less and text-only: no LiveKit server, Baseten or Cartesia traffic.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import Any, TextIO

from agent.config import Settings
from agent.logs import configure_structlog, get_logger, install_on_root_handlers

log = get_logger("agent.console")

PROMPT_HINT = "Type a message and press Enter (Ctrl-D to quit)."


def _assistant_texts(events: list[Any]) -> list[str]:
    texts: list[str] = []
    for ev in events:
        item: Any = getattr(ev, "item", None)
        if getattr(ev, "type", None) == "message" and getattr(item, "role", None) == "assistant":
            texts.append(item.text_content or "")
    return texts


async def run_text_console(
    settings: Settings, *, stdin: TextIO, stdout: TextIO, interactive: bool
) -> int:
    from livekit.agents.utils import http_context

    from agent.session_factory import build_assistant, build_text_session

    loop = asyncio.get_running_loop()
    async with http_context.open():
        parts = build_text_session(settings)
        session = parts.session
        try:
            await session.start(build_assistant(settings))
            if settings.agent.greeting:
                print(f"agent: {settings.agent.greeting}", file=stdout, flush=True)
            if interactive:
                print(PROMPT_HINT, file=stdout, flush=True)
            while True:
                if interactive:
                    print("you: ", end="", file=stdout, flush=True)
                line = await loop.run_in_executor(None, stdin.readline)
                if not line:  # EOF
                    break
                text = line.strip()
                if not text:
                    continue
                result: Any = await session.run(user_input=text)
                for reply in _assistant_texts(result.events):
                    print(f"agent: {reply}", file=stdout, flush=True)
        finally:
            await session.aclose()
            await parts.llm.aclose()
    return 0


def main(settings: Settings, *, log_level: str) -> int:
    """Run the text console on this process's stdin/stdout; returns the exit code."""
    handler = logging.StreamHandler(sys.stderr)
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(log_level)
    configure_structlog()
    install_on_root_handlers(json=False, colors=sys.stderr.isatty(), handlers=[handler])
    try:
        return asyncio.run(
            run_text_console(
                settings, stdin=sys.stdin, stdout=sys.stdout, interactive=sys.stdin.isatty()
            )
        )
    except KeyboardInterrupt:
        return 130
