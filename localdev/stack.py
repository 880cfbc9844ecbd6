"""Start the local stand-ins a worker needs and say how to reach them, as environment variables.

``LocalStack`` starts any subset of: a loopback LiveKit server (``localdev.livekit_server``), the
Baseten streaming-Whisper stand-in, the OpenAI Chat Completions stand-in and the Cartesia TTS
stand-in, each on a free loopback port with its own freshly generated API key (the stand-ins
check it, so a wiring mistake fails loudly instead of silently working). ``stack.env`` is then
exactly what a user would put in the worker's environment::

    async with LocalStack(llm_ttft_s=0.3) as stack:
        worker_env = {**stack.env}          # LIVEKIT_*, BASETEN_*, OPENAI_*, CARTESIA_*, ...
        stack.livekit.url                   # for RoomAdmin / Caller
        await stack.baseten.stats()         # the stand-ins themselves, for assertions

Mixing real and local services (the keyless demo): pass ``livekit=`` an already running server
(a ``LocalLiveKitServer`` or ``LiveKitCredentials`` for any other, e.g. LiveKit Cloud) instead
of starting one, and ``baseten=False`` / ``openai=False`` / ``cartesia=False`` for services the
user has real keys for; their variables are then absent from ``stack.env``.
``LocalStack.filling_gaps(os.environ)`` does that choice from the user's environment.

The Baseten stand-in (real Whisper) runs as its own process (``BasetenServerProcess``), so its
decodes never compete with the caller's event loop or GIL; the OpenAI and Cartesia stand-ins
run on the caller's event loop (aiohttp servers), so that loop must keep running while a
worker talks to them: use the stack from async code that awaits rather than blocks.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Protocol

from localdev.baseten import FaultPlan
from localdev.baseten.process import BasetenServerProcess
from localdev.baseten.server import ProtocolName
from localdev.cartesia.server import LocalCartesiaServer
from localdev.livekit_server import LocalLiveKitServer
from localdev.openai.replies import Replies
from localdev.openai.server import LocalOpenAIServer
from localdev.service import AsyncService

#: Default ``LIVEKIT_AGENT_NAME``: a name turns on explicit dispatch, so a stack never makes
#: the worker join rooms it was not asked into (e.g. another test's room on a shared server).
DEFAULT_AGENT_NAME: Final = "local-voice-agent"

#: The real service's URL form (doc baseten-protocol.md §2), so the worker's endpoint
#: normalisation is exercised exactly as with a production endpoint.
BASETEN_PATH: Final = "/environments/production/websocket"
#: ``BASETEN_MODEL`` -> the stand-in's ``--protocol``.
BASETEN_PROTOCOLS: Final[dict[str, ProtocolName]] = {"whisper": "whisper", "qwen3-asr": "qwen3"}

#: Which variables mean "the user brought a real one of these" (all must be non-empty).
SERVICE_VARIABLES: Final[dict[str, tuple[str, ...]]] = {
    "livekit": ("LIVEKIT_URL", "LIVEKIT_API_KEY", "LIVEKIT_API_SECRET"),
    "baseten": ("BASETEN_API_KEY", "BASETEN_MODEL_ENDPOINT"),
    "openai": ("OPENAI_API_KEY",),
    "cartesia": ("CARTESIA_API_KEY",),
}


_SECRET_VARIABLES: Final = (
    "LIVEKIT_API_KEY",
    "LIVEKIT_API_SECRET",
    "BASETEN_API_KEY",
    "OPENAI_API_KEY",
    "CARTESIA_API_KEY",
)


class LiveKitEndpoint(Protocol):
    """Anything with a LiveKit URL and credentials (``LocalLiveKitServer`` is one)."""

    @property
    def url(self) -> str: ...

    @property
    def api_key(self) -> str: ...

    @property
    def api_secret(self) -> str: ...


@dataclass(frozen=True)
class LiveKitCredentials:
    """A LiveKit server the stack does not own (e.g. LiveKit Cloud, or one started elsewhere)."""

    url: str
    api_key: str = field(repr=False)
    api_secret: str = field(repr=False)


def missing_services(environ: Mapping[str, str]) -> frozenset[str]:
    """Services (keys of ``SERVICE_VARIABLES``) that ``environ`` does not fully configure."""
    return frozenset(
        name
        for name, variables in SERVICE_VARIABLES.items()
        if not all(environ.get(v, "").strip() for v in variables)
    )


def _generated_key(service: str) -> str:
    # Distinctive and long: long enough for the worker's redactor, and greppable in logs
    # (a test can search every output line for it).
    return f"local-{service}-{secrets.token_hex(16)}"


class LocalStack(AsyncService):
    """Async context manager owning the started stand-ins; see the module docstring."""

    def __init__(
        self,
        *,
        livekit: bool | LiveKitEndpoint = True,
        baseten: bool = True,
        openai: bool = True,
        cartesia: bool = True,
        replies: Replies = None,
        llm_ttft_s: float = 0.0,
        llm_token_delay_s: float = 0.0,
        tts_ttfb_s: float = 0.0,
        stt_inference_delay_s: float = 0.0,
        baseten_faults: FaultPlan | None = None,
        baseten_send_log: Path | None = None,
        baseten_args: tuple[str, ...] = (),
        baseten_model: str = "whisper",
        baseten_fallback: bool = False,
        agent_name: str | None = DEFAULT_AGENT_NAME,
    ) -> None:
        """Configure (not start) the stack.

        Args:
            livekit: True starts a loopback ``livekit-server`` (stopped on exit); an endpoint
                (``LocalLiveKitServer`` already started, ``LiveKitCredentials``) is used as
                is and left running; False leaves ``LIVEKIT_URL/API_KEY/API_SECRET`` out.
            baseten / openai / cartesia: start that stand-in (False: the user brings the
                real service and its variables).
            replies: what the LLM stand-in says (see ``LocalOpenAIServer``): a list cycled
                per request, a callable ``messages -> str``, or None to echo the user.
            llm_ttft_s / llm_token_delay_s: LLM time to first token / between tokens.
            tts_ttfb_s: minimum TTS time to first audio (espeak itself takes ~0.1-0.3 s).
            stt_inference_delay_s: extra seconds per Baseten transcription (GPU queueing);
                shorthand for ``baseten_faults=FaultPlan(inference_delay_s=...)``.
            baseten_faults: a full fault plan for the Baseten stand-in.
            baseten_send_log: JSONL file where the Baseten stand-in logs every
                transcription it sends, with wall-clock send times (benchmarks).
            baseten_model: the protocol the Baseten stand-in speaks, as ``BASETEN_MODEL``
                names it: ``"whisper"`` or ``"qwen3-asr"`` (same engine, VAD and faults).
            baseten_fallback: start a second Baseten stand-in (no faults) and name it in
                ``BASETEN_FALLBACK_MODEL_ENDPOINT`` (``stack.baseten_fallback``).
            baseten_args: more ``python -m localdev.baseten`` arguments (e.g. ``--engine
                scripted`` to take Whisper's CPU out of a measurement).
            agent_name: ``LIVEKIT_AGENT_NAME`` (explicit dispatch); None leaves it out, so
                the worker joins every new room.
        """
        if baseten_faults is not None and stt_inference_delay_s:
            raise ValueError("give stt_inference_delay_s inside baseten_faults, not both")
        self._livekit_arg = livekit
        self._want = {"baseten": baseten, "openai": openai, "cartesia": cartesia}
        self._replies = replies
        self._llm_ttft_s = llm_ttft_s
        self._llm_token_delay_s = llm_token_delay_s
        self._tts_ttfb_s = tts_ttfb_s
        self._faults = baseten_faults or FaultPlan(inference_delay_s=stt_inference_delay_s)
        self._send_log = baseten_send_log
        self._baseten_args = baseten_args
        if baseten_model not in BASETEN_PROTOCOLS:
            raise ValueError(
                f"baseten_model must be one of {', '.join(BASETEN_PROTOCOLS)}, "
                f"got {baseten_model!r}"
            )
        self.baseten_model = baseten_model
        self._want_fallback = baseten_fallback
        self.agent_name = agent_name
        self._keys = {name: _generated_key(name) for name in ("baseten", "openai", "cartesia")}
        self._exit = contextlib.AsyncExitStack()
        self.livekit: LiveKitEndpoint | None = None
        """The LiveKit server in use (started or given), or None."""
        self.livekit_server: LocalLiveKitServer | None = None
        """The ``LocalLiveKitServer`` this stack started itself, if any."""
        self.baseten: BasetenServerProcess | None = None
        self.baseten_fallback: BasetenServerProcess | None = None
        self.openai: LocalOpenAIServer | None = None
        self.cartesia: LocalCartesiaServer | None = None

    @classmethod
    def filling_gaps(cls, environ: Mapping[str, str], **kwargs: object) -> LocalStack:
        """A stack with a stand-in for exactly the services ``environ`` lacks.

        A service counts as provided when all of its ``SERVICE_VARIABLES`` are non-empty;
        the real ones then stay in ``environ`` and out of ``stack.env``. Other keyword
        arguments are passed to the constructor.
        """
        missing = missing_services(environ)
        kwargs.setdefault("baseten_model", environ.get("BASETEN_MODEL", "whisper").lower())
        return cls(
            livekit="livekit" in missing,
            baseten="baseten" in missing,
            openai="openai" in missing,
            cartesia="cartesia" in missing,
            **kwargs,  # type: ignore[arg-type]
        )

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Start every configured stand-in; on any failure, stop the ones already started."""
        try:
            await self._start()
        except BaseException:
            await self.aclose()
            raise

    async def _start(self) -> None:
        # Sequential on purpose: each start is well under a second except livekit-server's,
        # and on a shared 2-core machine parallel starts only contend for the same CPU.
        if self._livekit_arg is True:
            server = LocalLiveKitServer()
            await server.astart()
            self._exit.push_async_callback(server.astop)
            self.livekit = self.livekit_server = server
        elif self._livekit_arg is not False:
            self.livekit = self._livekit_arg
        if self._want["baseten"]:
            self.baseten = await self._exit.enter_async_context(
                BasetenServerProcess(
                    api_key=self._keys["baseten"],
                    faults=self._faults,
                    send_log=self._send_log,
                    extra_args=self._baseten_args,
                    protocol=BASETEN_PROTOCOLS[self.baseten_model],
                )
            )
        if self._want["baseten"] and self._want_fallback:
            self.baseten_fallback = await self._exit.enter_async_context(
                BasetenServerProcess(
                    api_key=self._keys["baseten"],
                    extra_args=self._baseten_args,
                    protocol=BASETEN_PROTOCOLS[self.baseten_model],
                )
            )
        if self._want["openai"]:
            self.openai = await self._exit.enter_async_context(
                LocalOpenAIServer(
                    api_key=self._keys["openai"],
                    replies=self._replies,
                    ttft_s=self._llm_ttft_s,
                    token_delay_s=self._llm_token_delay_s,
                )
            )
        if self._want["cartesia"]:
            self.cartesia = await self._exit.enter_async_context(
                LocalCartesiaServer(api_key=self._keys["cartesia"], ttfb_s=self._tts_ttfb_s)
            )

    async def aclose(self) -> None:
        """Stop what this stack started (a LiveKit server passed in is left running)."""
        await self._exit.aclose()

    # ------------------------------------------------------------------ what to tell the worker
    @property
    def env(self) -> dict[str, str]:
        """The worker's environment variables for every service this stack provides.

        Exactly the names a user sets (see ``.env.example``); services not provided by the
        stack are absent, so ``{**os.environ, **stack.env}`` keeps the user's real ones.
        """
        env: dict[str, str] = {}
        if self.livekit is not None:
            env["LIVEKIT_URL"] = self.livekit.url
            env["LIVEKIT_API_KEY"] = self.livekit.api_key
            env["LIVEKIT_API_SECRET"] = self.livekit.api_secret
        if self.agent_name is not None:
            env["LIVEKIT_AGENT_NAME"] = self.agent_name
        if self.baseten is not None:
            env["BASETEN_MODEL_ENDPOINT"] = self.baseten.url + BASETEN_PATH
            env["BASETEN_API_KEY"] = self._keys["baseten"]
            env["BASETEN_MODEL"] = self.baseten_model
        if self.baseten_fallback is not None:
            env["BASETEN_FALLBACK_MODEL_ENDPOINT"] = self.baseten_fallback.url + BASETEN_PATH
        if self.openai is not None:
            env["OPENAI_BASE_URL"] = self.openai.base_url
            env["OPENAI_API_KEY"] = self._keys["openai"]
        if self.cartesia is not None:
            env["CARTESIA_BASE_URL"] = self.cartesia.base_url
            env["CARTESIA_API_KEY"] = self._keys["cartesia"]
        return env

    @property
    def secrets(self) -> list[str]:
        """Every credential in ``env`` (for "no secret in any log line" checks)."""
        env = self.env
        return [env[n] for n in _SECRET_VARIABLES if n in env]

    def __repr__(self) -> str:
        # Never the keys: pytest prints fixture reprs in failure reports.
        parts = [f"{k}={v}" for k, v in self.env.items() if "KEY" not in k and "SECRET" not in k]
        return f"LocalStack({', '.join(parts) or 'not started'})"
