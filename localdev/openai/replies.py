"""What the stand-in LLM says: a cycled script, a function of the messages, or an echo."""

from __future__ import annotations

import inspect
import itertools
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any

Messages = list[dict[str, Any]]
ReplyFn = Callable[[Messages], "str | Awaitable[str]"]
Replies = Sequence[str] | ReplyFn | None

# Long user turns are cut so the echo stays "one short sentence": a voice reply that
# reads back a whole paragraph would dominate TTS time in benchmarks.
_ECHO_MAX_CHARS = 80


def message_text(message: dict[str, Any]) -> str:
    """Plain text of one chat message; content may be a string or a list of parts."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            str(part.get("text", ""))
            for part in content
            if isinstance(part, dict) and part.get("type") == "text"
        )
    return ""


def default_reply(messages: Messages) -> str:
    """Acknowledge the last user message in one short sentence."""
    last_user = next(
        (message_text(m).strip() for m in reversed(messages) if m.get("role") == "user"), ""
    )
    if not last_user:
        return "Hello, how can I help you today?"
    if len(last_user) > _ECHO_MAX_CHARS:
        last_user = last_user[:_ECHO_MAX_CHARS].rsplit(" ", 1)[0] + "..."
    return f"You said: {last_user.rstrip('.!?')}. How can I help with that?"


class ReplyScript:
    """Turns each request's messages into reply text.

    A sequence is cycled in order (request N gets ``replies[N % len]``), a callable is
    called with the request's messages (sync or async), ``None`` echoes the user.
    """

    def __init__(self, *, replies: Replies) -> None:
        self._fn: ReplyFn | None = None
        self._cycle: Iterator[str] | None = None
        if replies is None:
            self._fn = default_reply
        elif callable(replies):
            self._fn = replies
        else:
            if isinstance(replies, str):
                raise TypeError("replies must be a list of strings, not a single string")
            if not replies:
                raise ValueError("replies must not be empty")
            self._cycle = itertools.cycle(list(replies))

    async def next_reply(self, messages: Messages) -> str:
        if self._cycle is not None:
            return next(self._cycle)
        assert self._fn is not None
        result = self._fn(messages)
        if inspect.isawaitable(result):
            result = await result
        return str(result)
