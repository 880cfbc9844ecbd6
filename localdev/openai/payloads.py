"""JSON bodies shaped exactly like OpenAI's Chat Completions responses.

Field sets follow what api.openai.com returns today for ``chat.completion`` and
``chat.completion.chunk`` objects, so the official SDK (which the LiveKit plugin uses)
parses them with no missing-field surprises.
"""

from __future__ import annotations

import re
import secrets
import time
from typing import Any

from localdev.openai.replies import message_text

# The stand-in has no tokenizer; a "token" is a word with its leading whitespace, which is
# roughly how OpenAI streams English (" table", " for", ","), close enough for pacing.
_TOKEN_RE = re.compile(r"\s*\S+")

SYSTEM_FINGERPRINT = "fp_localdev"


def split_tokens(text: str) -> list[str]:
    """Split reply text into stream deltas that concatenate back to ``text``."""
    tokens = _TOKEN_RE.findall(text)
    consumed = "".join(tokens)
    if consumed != text:  # trailing whitespace
        tokens.append(text[len(consumed) :])
    return tokens


def count_prompt_tokens(messages: list[dict[str, Any]]) -> int:
    return sum(len(split_tokens(message_text(m))) for m in messages)


def new_completion_id() -> str:
    return "chatcmpl-" + secrets.token_hex(12)


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def chunk(
    *,
    completion_id: str,
    created: int,
    model: str,
    delta: dict[str, Any] | None,
    finish_reason: str | None = None,
    include_usage: bool = False,
    usage_body: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One ``chat.completion.chunk``; ``delta=None`` makes the choice-less usage chunk."""
    body: dict[str, Any] = {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "service_tier": "default",
        "system_fingerprint": SYSTEM_FINGERPRINT,
        "choices": []
        if delta is None
        else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
    }
    # With stream_options.include_usage OpenAI adds "usage": null to every chunk and the
    # real numbers only on the extra final chunk whose choices list is empty.
    if include_usage:
        body["usage"] = usage_body
    return body


def completion(
    *, completion_id: str, model: str, content: str, prompt_tokens: int, completion_tokens: int
) -> dict[str, Any]:
    """A whole non-streaming ``chat.completion`` object."""
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "service_tier": "default",
        "system_fingerprint": SYSTEM_FINGERPRINT,
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": content,
                    "refusal": None,
                    "annotations": [],
                },
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": usage(prompt_tokens, completion_tokens),
    }


def error(
    message: str, *, type_: str, code: str | None = None, param: str | None = None
) -> dict[str, Any]:
    """OpenAI's error envelope (never put a secret in ``message``)."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def models_list(model_ids: list[str]) -> dict[str, Any]:
    return {
        "object": "list",
        "data": [
            {"id": m, "object": "model", "created": 1_700_000_000, "owned_by": "localdev"}
            for m in model_ids
        ],
    }
