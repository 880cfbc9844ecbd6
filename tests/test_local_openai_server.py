"""The OpenAI stand-in, driven by the real LiveKit OpenAI plugin and the OpenAI SDK."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import openai as openai_sdk
import pytest
from livekit.agents import APIStatusError, llm
from livekit.plugins import openai

from localdev.openai.server import LocalOpenAIServer
from tests.fixtures.standins import NO_RETRY, STANDIN_API_KEY

REPO = Path(__file__).resolve().parents[1]


def _chat(user_text: str, *, instructions: str | None = None) -> llm.ChatContext:
    ctx = llm.ChatContext.empty()
    if instructions:
        ctx.add_message(role="system", content=instructions)
    ctx.add_message(role="user", content=user_text)
    return ctx


async def _run_turn(model: openai.LLM, ctx: llm.ChatContext) -> tuple[str, float, list[Any]]:
    """Returns (text, seconds to first content token, usage objects)."""
    t0 = time.monotonic()
    first: float | None = None
    text = ""
    usages = []
    async with model.chat(chat_ctx=ctx, conn_options=NO_RETRY) as stream:
        async for chunk in stream:
            if chunk.delta and chunk.delta.content:
                first = first if first is not None else time.monotonic() - t0
                text += chunk.delta.content
            if chunk.usage:
                usages.append(chunk.usage)
    assert first is not None, "no content token arrived"
    return text, first, usages


def _plugin(srv: LocalOpenAIServer, api_key: str = STANDIN_API_KEY) -> openai.LLM:
    return openai.LLM(model="gpt-4.1-mini", base_url=srv.base_url, api_key=api_key)


async def test_stream_returns_scripted_replies_in_order_with_ttft() -> None:
    replies = ["Sure, a table for two at seven.", "Done, see you tonight!"]
    async with LocalOpenAIServer(replies=replies, ttft_s=0.3, api_key=STANDIN_API_KEY) as srv:
        model = _plugin(srv)
        try:
            text1, ttft1, usage1 = await _run_turn(model, _chat("Book a table for two."))
            text2, _, _ = await _run_turn(model, _chat("Seven please."))
            text3, _, _ = await _run_turn(model, _chat("Again?"))
        finally:
            await model.aclose()

    assert (text1, text2, text3) == (replies[0], replies[1], replies[0])
    # Generous lower bound only: the server waits ttft_s before the first token.
    assert ttft1 >= 0.3
    # The plugin asks for usage; the stand-in reports one token per streamed word.
    assert len(usage1) == 1 and usage1[0].completion_tokens == len(replies[0].split())
    assert [r["messages"][-1]["content"] for r in srv.requests] == [
        "Book a table for two.",
        "Seven please.",
        "Again?",
    ]
    assert all(r["stream"] is True for r in srv.requests)


async def test_callable_reply_sees_the_conversation() -> None:
    seen: list[list[dict[str, Any]]] = []

    def reply(messages: list[dict[str, Any]]) -> str:
        seen.append(messages)
        return f"I heard {len(messages)} messages."

    async with LocalOpenAIServer(replies=reply) as srv:
        model = _plugin(srv, api_key="anything")  # no api_key on the server: any key is fine
        try:
            text, _, _ = await _run_turn(model, _chat("Hi.", instructions="Be brief."))
        finally:
            await model.aclose()
    assert text == "I heard 2 messages."
    assert [m["role"] for m in seen[0]] == ["system", "user"]


async def test_default_reply_acknowledges_the_user(standin_llm: openai.LLM) -> None:
    text, _, _ = await _run_turn(standin_llm, _chat("I would like a window seat"))
    assert "window seat" in text
    assert text.endswith(("?", ".", "!"))


async def test_token_delay_streams_word_by_word() -> None:
    reply = "One two three four five."
    async with LocalOpenAIServer(replies=[reply], token_delay_s=0.05) as srv:
        model = _plugin(srv)
        arrivals: list[tuple[float, str]] = []
        try:
            async with model.chat(chat_ctx=_chat("count"), conn_options=NO_RETRY) as stream:
                async for chunk in stream:
                    if chunk.delta and chunk.delta.content:
                        arrivals.append((time.monotonic(), chunk.delta.content))
        finally:
            await model.aclose()
    assert [c for _, c in arrivals] == ["One", " two", " three", " four", " five."]
    # Five tokens, four gaps of >= 50 ms on the server: a generous lower bound.
    assert arrivals[-1][0] - arrivals[0][0] >= 0.15


async def test_wrong_key_surfaces_as_plugin_401_without_leaking_it(
    standin_openai: LocalOpenAIServer,
) -> None:
    wrong = "sk-wrong-secret-123"
    model = _plugin(standin_openai, api_key=wrong)
    try:
        with pytest.raises(APIStatusError) as err:
            await _run_turn(model, _chat("Hello"))
    finally:
        await model.aclose()
    assert err.value.status_code == 401
    assert wrong not in str(err.value) and wrong not in repr(err.value.body)
    assert standin_openai.requests == []  # rejected before being recorded


async def test_client_disconnect_mid_stream_leaves_server_healthy() -> None:
    async with LocalOpenAIServer(replies=["a b c d e f g h i j"], token_delay_s=0.05) as srv:
        model = _plugin(srv)
        try:
            async with model.chat(chat_ctx=_chat("go"), conn_options=NO_RETRY) as stream:
                async for chunk in stream:
                    if chunk.delta and chunk.delta.content:
                        break  # an interrupted agent turn
            text, _, _ = await _run_turn(model, _chat("again"))
        finally:
            await model.aclose()
    assert text == "a b c d e f g h i j"


async def test_sdk_non_streaming_and_models_list() -> None:
    async with LocalOpenAIServer(replies=["Plain answer."], api_key=STANDIN_API_KEY) as srv:
        client = openai_sdk.AsyncClient(base_url=srv.base_url, api_key=STANDIN_API_KEY)
        try:
            resp = await client.chat.completions.create(
                model="gpt-4.1-mini", messages=[{"role": "user", "content": "hi"}]
            )
            models = await client.models.list()
        finally:
            await client.close()
    assert resp.choices[0].message.content == "Plain answer."
    assert resp.choices[0].finish_reason == "stop"
    assert resp.usage is not None and resp.usage.completion_tokens == 2
    assert "gpt-4.1-mini" in [m.id for m in models.data]


async def test_sdk_rejects_bad_request_with_openai_error_shape() -> None:
    async with LocalOpenAIServer() as srv:
        client = openai_sdk.AsyncClient(base_url=srv.base_url, api_key="x", max_retries=0)
        try:
            with pytest.raises(openai_sdk.BadRequestError) as err:
                await client.chat.completions.create(model="gpt-4.1-mini", messages=[])
        finally:
            await client.close()
    assert err.value.status_code == 400
    assert isinstance(err.value.body, dict) and err.value.body["param"] == "messages"


async def test_cli_serves_and_exits_cleanly_on_ctrl_c() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "localdev.openai",
        "--port",
        "0",
        "--reply",
        "From the CLI.",
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        assert proc.stdout is not None
        base_url = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode().strip()
        assert base_url.startswith("http://127.0.0.1:") and base_url.endswith("/v1")
        model = openai.LLM(model="gpt-4.1-mini", base_url=base_url, api_key="x")
        try:
            text, _, _ = await _run_turn(model, _chat("hello"))
        finally:
            await model.aclose()
        assert text == "From the CLI."
        proc.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(proc.wait(), 10) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
