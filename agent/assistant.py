"""The voice assistant persona: instructions from settings and an optional greeting."""

from __future__ import annotations

from livekit.agents import Agent


class Assistant(Agent):
    """A voice assistant whose prompt and greeting come from :class:`agent.config.Settings`."""

    def __init__(self, *, instructions: str, greeting: str | None = None) -> None:
        """``instructions``: the system prompt (voice-style by default, see
        ``agent.config.DEFAULT_INSTRUCTIONS``); ``greeting``: spoken verbatim when the
        session starts, or nothing when ``None``/empty."""
        super().__init__(instructions=instructions)
        self._greeting = greeting or None

    @property
    def greeting(self) -> str | None:
        return self._greeting

    async def on_enter(self) -> None:
        if self._greeting:
            # say() speaks the exact text through TTS: no LLM round trip before the first
            # words, so the caller hears the agent as soon as the session is up.
            self.session.say(self._greeting, allow_interruptions=True)
