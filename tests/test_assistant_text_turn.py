"""The Assistant answers a text turn through AgentSession's testing API, against the
real OpenAI plugin talking HTTP to the local OpenAI-compatible server on loopback."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agent.config import DEFAULT_INSTRUCTIONS, Profile, load_settings
from agent.session_factory import build_assistant, build_text_session
from localdev.openai.server import LocalOpenAIServer
from tests.fixtures.worker import FAKE_SECRETS, valid_env


def _messages(request: dict[str, Any]) -> list[dict[str, Any]]:
    return list(request["messages"])


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content)


async def test_assistant_answers_a_text_turn() -> None:
    reply = "The library opens at nine in the morning."
    async with LocalOpenAIServer(replies=[reply], api_key=FAKE_SECRETS["OPENAI_API_KEY"]) as srv:
        settings = load_settings(
            valid_env(OPENAI_BASE_URL=srv.base_url, OPENAI_MODEL="gpt-4.1-mini"),
            profile=Profile.WORKER,
        )
        parts = build_text_session(settings)
        try:
            async with parts.session as session:
                await session.start(build_assistant(settings))
                result: Any = await session.run(user_input="When does the library open?")
                event = result.expect.next_event().is_message(role="assistant")
                assert event.event().item.text_content == reply
                result.expect.no_more_events()
        finally:
            await parts.llm.aclose()

    # what actually went over the wire to the OpenAI-compatible server
    assert len(srv.requests) == 1
    request = srv.requests[0]
    assert request["model"] == "gpt-4.1-mini"
    messages = _messages(request)
    system = [m for m in messages if m["role"] in ("system", "developer")]
    assert system and DEFAULT_INSTRUCTIONS.splitlines()[0] in _text(system[0]["content"])
    assert _text(messages[-1]["content"]) == "When does the library open?"
    assert messages[-1]["role"] == "user"


async def test_instructions_from_file_reach_the_llm(tmp_path: Path) -> None:
    prompt = tmp_path / "persona.txt"
    prompt.write_text("You are Captain Reply. Answer in one short sentence.\n")
    async with LocalOpenAIServer(replies=["Aye."], api_key=FAKE_SECRETS["OPENAI_API_KEY"]) as srv:
        settings = load_settings(
            valid_env(OPENAI_BASE_URL=srv.base_url, AGENT_INSTRUCTIONS=f"@{prompt}"),
            profile=Profile.WORKER,
        )
        parts = build_text_session(settings)
        try:
            async with parts.session as session:
                await session.start(build_assistant(settings))
                result: Any = await session.run(user_input="Status report?")
                result.expect.next_event().is_message(role="assistant")
        finally:
            await parts.llm.aclose()
    system = [m for m in _messages(srv.requests[0]) if m["role"] in ("system", "developer")]
    assert "You are Captain Reply." in _text(system[0]["content"])
