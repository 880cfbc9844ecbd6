"""``STT``: the public entry point of the vendored Baseten streaming STT plugin."""

from __future__ import annotations

import asyncio
import os
import ssl
import time
import weakref
from collections.abc import Sequence
from typing import Literal

import aiohttp
from livekit import rtc
from livekit.agents import (
    DEFAULT_API_CONNECT_OPTIONS,
    APIConnectOptions,
    stt,
    utils,
)
from livekit.agents.types import NOT_GIVEN, NotGivenOr
from livekit.agents.utils import AudioBuffer, is_given

from .connect import default_ssl_context, open_websocket
from .dialect import dialect_for
from .endpoint import endpoint_for_chain, endpoint_for_model, normalize_endpoint
from .failover import EndpointPool, EndpointSwitch
from .log import logger
from .models import MODEL_DEFAULTS, MODELS, STTModel, STTOptions
from .protocol import (
    Encoding,
    ErrorFrame,
    HealthCheckReply,
    SessionCreated,
    parse_server_message,
)
from .stats import STTStats
from .stream import SpeechStream

STTEncoding = Literal["pcm_s16le", "pcm_mulaw"]
EventTypes = Literal["transcript_latency", "endpoint_switched"]

#: A probe of a failed primary: its health_check reply (Whisper) must come within this.
PROBE_REPLY_TIMEOUT_S = 2.0
#: Qwen3-ASR has no probe message: an accepted handshake not closed or answered with an
#: error within this counts as healthy.
PROBE_QUIET_S = 0.5


class STT(stt.STT[EventTypes]):
    """Streaming speech-to-text against a Baseten streaming Whisper or Qwen3-ASR deployment."""

    def __init__(
        self,
        *,
        model_endpoint: str | None = None,
        api_key: str | None = None,
        model_id: str | None = None,
        chain_id: str | None = None,
        fallback_endpoints: Sequence[str] = (),
        model: STTModel | str = "whisper",
        language: NotGivenOr[str] = NOT_GIVEN,
        language_options: list[str] | None = None,
        vad_threshold: float = 0.5,
        vad_min_silence_duration_ms: NotGivenOr[int] = NOT_GIVEN,
        vad_speech_pad_ms: NotGivenOr[int] = NOT_GIVEN,
        enable_partial_transcripts: bool = True,
        partial_transcript_interval_s: float = 0.5,
        final_transcript_max_duration_s: int = 30,
        show_word_timestamps: NotGivenOr[bool] = NOT_GIVEN,
        prompt: str = "",
        encoding: STTEncoding = "pcm_s16le",
        sample_rate: int | None = None,
        buffer_size_seconds: float | None = None,
        allow_insecure: bool = False,
        ssl_context: ssl.SSLContext | None = None,
        replay_buffer_s: float = 35.0,
        keepalive_interval_s: float = 5.0,
        stall_timeout_s: float = 15.0,
        speech_stall_s: float = 1.75,
        cold_start_timeout_s: float = 360.0,
        finish_timeout_s: float = 10.0,
        failover_after_s: float = 1.0,
        failback_probe_interval_s: float = 5.0,
        manual_flush: bool = True,
        http_session: aiohttp.ClientSession | None = None,
    ) -> None:
        """Create a Baseten streaming STT (a drop-in for ``livekit.plugins.baseten.STT``).

        Endpoint (first given wins): ``model_endpoint`` (any form the dashboard shows,
        e.g. ``https://model-<id>.api.baseten.co/environments/production/predict``; it is
        normalised to the ``wss://…/websocket`` URL), ``model_id``, ``chain_id``, then the
        ``BASETEN_MODEL_ENDPOINT`` env var. ``api_key`` falls back to ``BASETEN_API_KEY``
        and is only ever sent as the ``Authorization: Api-Key`` header.

        Args:
            fallback_endpoints: further deployments of the same model (another region or
                deployment), in order, each in any form ``model_endpoint`` takes, reached
                with the same ``api_key``. A stream whose endpoint is refused, times out,
                stalls, keeps answering 5xx for ``failover_after_s`` or sends fatal errors
                moves to the next one *within the same stream*: unfinalised audio is
                replayed there, so no word is lost. The failed primary is probed every
                ``failback_probe_interval_s``; once it answers, streams return to it at
                their next utterance boundary. Each switch logs one line and emits
                ``"endpoint_switched"`` (:class:`~.failover.EndpointSwitch`).
            model: the protocol the deployment speaks: ``"whisper"`` (Model Library
                "Whisper (Streaming)") or ``"qwen3-asr"`` (Qwen3-ASR "Deploy Streaming").
                Defaults marked *per model* below follow ``models.MODEL_DEFAULTS``.
            language: per model: Whisper ``audio_language`` code (default ``"en"``);
                Qwen3-ASR a code or Qwen3 name (``"en"``/``"English"``, sent as the name;
                default ``"auto"``; forcing one also sets the output language).
                ``"auto"`` detects.
            language_options: restrict Whisper's detection (needs server runtime >= v0.5.0;
                omitted from the wire when empty; not a Qwen3-ASR option).
            vad_threshold, vad_min_silence_duration_ms, vad_speech_pad_ms: the server-side
                VAD that decides when a final is sent; per model: 300/30 ms for Whisper
                (LiveKit guide), 500/100 ms for Qwen3-ASR (official plugin).
            enable_partial_transcripts, partial_transcript_interval_s: interim results
                and their cadence in buffered audio seconds (server default 0.5).
            final_transcript_max_duration_s: force a final after this much speech (<= 30).
            show_word_timestamps: word timings (needed for precise ``speech_end_time``); per
                model: on for Whisper, off for Qwen3-ASR (needs ``STREAM_ALIGNER=mms`` on
                the deployment, silently ignored otherwise).
            prompt: Whisper prompt (omitted from the wire when empty).
            encoding: ``"pcm_s16le"`` (16 kHz, 1024-byte frames) or ``"pcm_mulaw"`` (8 kHz,
                256-byte frames, Whisper only); input audio of any rate and channel count
                is resampled and downmixed to match.
            sample_rate: accepted for compatibility; must equal the encoding's rate.
            buffer_size_seconds: accepted for compatibility. Frames are the protocol's
                (Whisper: one 32 ms VAD window, the only size its server accepts, so any
                other value is refused here rather than by the server mid-call; Qwen3-ASR:
                100 ms, and the value is ignored, as the official client ignores it).
            allow_insecure: permit plaintext ``ws://`` to non-loopback hosts.
            ssl_context: TLS trust for ``wss://``; default: the system store
                (``ssl.create_default_context()``, honours ``SSL_CERT_FILE``).
            replay_buffer_s: unfinalised audio kept to replay after a drop (>= 10 s;
                default 35 s = the server's 30 s utterance cap + 5 s in flight).
            keepalive_interval_s: ``health_check`` cadence (keepalive and RTT probe).
            stall_timeout_s: unanswered health checks (or, Qwen3, no result with an
                utterance open) for this long => reconnect + replay; the last resort.
            speech_stall_s: this much of the caller's speech sent with no result back =>
                reconnect + replay (with partials on; a live server answers every
                ``partial_transcript_interval_s`` of speech).
            cold_start_timeout_s: total time to keep retrying 5xx/429 upgrades with
                jittered backoff (scale-to-zero boots take minutes).
            failover_after_s, failback_probe_interval_s: see ``fallback_endpoints``
                (used only with one).
            finish_timeout_s: wait this long after the end of audio (``end_audio`` /
                the last commit) and after any commit for the server's reply, counted from
                its newest frame; an unanswered commit is then a stall (reconnect, replay).
            manual_flush: declare LiveKit's ``manual_flush`` capability. LiveKit then
                flushes the stream when its VAD or turn detector hears the user stop, and
                the flush ends the utterance at once (Qwen3-ASR: ``commit``; Whisper: the
                server VAD's remaining silence sent at once), so the final arrives after
                inference instead of after ``vad_min_silence_duration_ms`` of real time.
                Off: only the server's own silence ends an utterance.
            http_session: aiohttp session to use; default: the job's shared session, or
                one owned (and closed) by this STT outside a job.

        Raises:
            ValueError: a missing key/endpoint or an invalid option (one line, naming it).
        """
        if model not in MODELS:
            raise ValueError(
                f"model must be one of {', '.join(repr(m) for m in MODELS)} (the Baseten "
                f"streaming protocols this plugin speaks), got {model!r}"
            )
        defaults = MODEL_DEFAULTS[model]
        language = language if is_given(language) else defaults.language
        if not is_given(show_word_timestamps):
            show_word_timestamps = defaults.show_word_timestamps
        if not is_given(vad_min_silence_duration_ms):
            vad_min_silence_duration_ms = defaults.vad_min_silence_duration_ms
        if not is_given(vad_speech_pad_ms):
            vad_speech_pad_ms = defaults.vad_speech_pad_ms
        api_key = api_key or os.environ.get("BASETEN_API_KEY")
        if not api_key:
            raise ValueError(
                "Baseten API key missing: pass api_key= or set the BASETEN_API_KEY "
                "environment variable"
            )
        if any(c.isspace() for c in api_key):
            raise ValueError(
                "Baseten api_key contains whitespace (stray newline from a secrets file?)"
            )
        given = [
            n
            for n, v in (
                ("model_endpoint", model_endpoint),
                ("model_id", model_id),
                ("chain_id", chain_id),
            )
            if v
        ]
        if len(given) > 1:
            logger.warning(
                "several Baseten endpoints given (%s); using %s", ", ".join(given), given[0]
            )
        if model_endpoint:
            url = normalize_endpoint(model_endpoint, allow_insecure=allow_insecure)
        elif model_id:
            url = endpoint_for_model(model_id)
        elif chain_id:
            url = endpoint_for_chain(chain_id)
        elif env := os.environ.get("BASETEN_MODEL_ENDPOINT", "").strip():
            url = normalize_endpoint(env, allow_insecure=allow_insecure)
        else:
            raise ValueError(
                "Baseten endpoint missing: pass model_endpoint=, model_id= or chain_id=, "
                "or set the BASETEN_MODEL_ENDPOINT environment variable"
            )
        fallbacks: list[str] = []
        for i, raw in enumerate(fallback_endpoints):
            try:
                fallbacks.append(normalize_endpoint(raw, allow_insecure=allow_insecure))
            except ValueError as e:
                raise ValueError(f"fallback_endpoints[{i}]: {e}") from None
        if url in fallbacks or len(set(fallbacks)) < len(fallbacks):
            raise ValueError(
                "fallback_endpoints must differ from the primary endpoint and each other"
            )
        try:
            enc = Encoding(encoding)
        except ValueError:
            raise ValueError(
                f"encoding must be 'pcm_s16le' or 'pcm_mulaw', got {encoding!r}"
            ) from None
        if (
            model == "whisper"
            and buffer_size_seconds is not None
            and abs(buffer_size_seconds - enc.frame_samples / enc.sample_rate) > 1e-6
        ):
            raise ValueError(
                f"buffer_size_seconds={buffer_size_seconds!r}: Baseten's Whisper server accepts "
                "only 0.032 s frames (one VAD window), which this plugin always sends"
            )
        if sample_rate is not None and sample_rate != enc.sample_rate:
            raise ValueError(
                f"sample_rate={sample_rate} does not match encoding {enc.value!r}, which the "
                f"server decodes at {enc.sample_rate} Hz (input audio is resampled automatically)"
            )
        self._opts = STTOptions(
            model=model,
            language=language,
            language_options=list(language_options or []),
            prompt=prompt,
            show_word_timestamps=show_word_timestamps,
            encoding=enc,
            enable_partial_transcripts=enable_partial_transcripts,
            partial_transcript_interval_s=partial_transcript_interval_s,
            final_transcript_max_duration_s=final_transcript_max_duration_s,
            vad_threshold=vad_threshold,
            vad_min_silence_duration_ms=vad_min_silence_duration_ms,
            vad_speech_pad_ms=vad_speech_pad_ms,
            replay_buffer_s=replay_buffer_s,
            keepalive_interval_s=keepalive_interval_s,
            stall_timeout_s=stall_timeout_s,
            speech_stall_s=speech_stall_s,
            cold_start_timeout_s=cold_start_timeout_s,
            finish_timeout_s=finish_timeout_s,
            failover_after_s=failover_after_s,
            failback_probe_interval_s=failback_probe_interval_s,
            manual_flush=manual_flush,
        )
        self._opts.validate()
        super().__init__(
            capabilities=stt.STTCapabilities(
                streaming=True,
                interim_results=enable_partial_transcripts,
                aligned_transcript="word" if show_word_timestamps else "chunk",
                offline_recognize=True,
                manual_flush=manual_flush,
            )
        )
        self._api_key = api_key
        self._url = url
        self._pool = EndpointPool(
            [url, *fallbacks],
            probe=self._probe_endpoint,
            probe_interval_s=failback_probe_interval_s,
            on_switch=self._on_endpoint_switch,
        )
        # Verified TLS against the system store (the official plugin disables checks);
        # the default context is shared per process (it holds the parsed CA store).
        self._ssl_context = ssl_context or default_ssl_context()
        self._session = http_session
        self._owns_session = False
        self._streams: weakref.WeakSet[SpeechStream] = weakref.WeakSet()
        self.stats = STTStats()

    @property
    def model(self) -> str:
        return self._opts.model

    @property
    def provider(self) -> str:
        return "Baseten"

    @property
    def endpoint(self) -> str:
        """The normalised websocket URL (carries no credentials)."""
        return self._url

    @property
    def endpoints(self) -> tuple[str, ...]:
        """The primary then each fallback, normalised (no credentials)."""
        return self._pool.endpoints

    @property
    def active_endpoint(self) -> str:
        """The endpoint new connections dial now."""
        return self._pool.endpoints[self._pool.active]

    @property
    def options(self) -> STTOptions:
        return self._opts

    def _ensure_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            try:
                self._session = utils.http_context.http_session()
            except RuntimeError:
                # Outside a job (scripts, tests): own a session and close it in aclose().
                self._session = aiohttp.ClientSession()
                self._owns_session = True
        return self._session

    def stream(
        self,
        *,
        language: NotGivenOr[str] = NOT_GIVEN,
        conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS,
    ) -> SpeechStream:
        opts = self._opts.replace(language=language) if is_given(language) else self._opts
        stream = SpeechStream(
            stt=self,
            opts=opts,
            conn_options=conn_options,
            endpoints=self._pool,
            api_key=self._api_key,
            http_session=self._ensure_session(),
            ssl_context=self._ssl_context,
        )
        self._streams.add(stream)
        self.stats.streams += 1
        return stream

    def update_options(
        self,
        *,
        language: NotGivenOr[str] = NOT_GIVEN,
        language_options: NotGivenOr[list[str]] = NOT_GIVEN,
        prompt: NotGivenOr[str] = NOT_GIVEN,
        vad_threshold: NotGivenOr[float] = NOT_GIVEN,
        vad_min_silence_duration_ms: NotGivenOr[int] = NOT_GIVEN,
        vad_speech_pad_ms: NotGivenOr[int] = NOT_GIVEN,
        enable_partial_transcripts: NotGivenOr[bool] = NOT_GIVEN,
        partial_transcript_interval_s: NotGivenOr[float] = NOT_GIVEN,
        final_transcript_max_duration_s: NotGivenOr[int] = NOT_GIVEN,
    ) -> None:
        """Change recognition options for new and live streams.

        Live streams switch on a fresh connection at the next utterance boundary (the
        server reads options only from the first message); unfinalised audio is replayed
        so nothing is lost.
        """
        changes = {
            k: v
            for k, v in {
                "language": language,
                "language_options": list(language_options)
                if is_given(language_options)
                else NOT_GIVEN,
                "prompt": prompt,
                "vad_threshold": vad_threshold,
                "vad_min_silence_duration_ms": vad_min_silence_duration_ms,
                "vad_speech_pad_ms": vad_speech_pad_ms,
                "enable_partial_transcripts": enable_partial_transcripts,
                "partial_transcript_interval_s": partial_transcript_interval_s,
                "final_transcript_max_duration_s": final_transcript_max_duration_s,
            }.items()
            if is_given(v)
        }
        if not changes:
            return
        self._opts = self._opts.replace(**changes)
        for stream in list(self._streams):
            stream.update_options(stream._opts.replace(**changes))

    def flush_streams(self) -> int:
        """Flush every live stream now (``SpeechStream.flush``): with ``manual_flush`` the
        server's remaining VAD silence is sent at once, so each open utterance gets its
        final after inference alone. For a turn detector that has heard the user stop
        before LiveKit's own flush would come. Returns how many streams were flushed."""
        flushed = 0
        for stream in list(self._streams):
            if stream.input_ended:
                continue
            stream.flush()
            flushed += 1
        return flushed

    async def _recognize_impl(
        self,
        buffer: AudioBuffer,
        *,
        language: NotGivenOr[str] = NOT_GIVEN,
        conn_options: APIConnectOptions,
    ) -> stt.SpeechEvent:
        """Batch recognition over one stream: push, end input, join the finals."""
        stream = self.stream(language=language, conn_options=conn_options)
        frames = [buffer] if isinstance(buffer, rtc.AudioFrame) else list(buffer)
        texts: list[stt.SpeechData] = []
        try:
            for frame in frames:
                stream.push_frame(frame)
            stream.end_input()
            async for ev in stream:
                if ev.type == stt.SpeechEventType.FINAL_TRANSCRIPT and ev.alternatives:
                    texts.append(ev.alternatives[0])
        finally:
            await stream.aclose()
        lang = texts[0].language if texts else self._opts.language
        return stt.SpeechEvent(
            type=stt.SpeechEventType.FINAL_TRANSCRIPT,
            request_id=stream.request_id,
            alternatives=[
                stt.SpeechData(
                    language=lang,  # type: ignore[arg-type]
                    text=" ".join(t.text for t in texts),
                    start_time=texts[0].start_time if texts else 0.0,
                    end_time=texts[-1].end_time if texts else 0.0,
                    confidence=(sum(t.confidence for t in texts) / len(texts)) if texts else 0.0,
                    words=[w for t in texts for w in (t.words or [])],
                )
            ],
        )

    def _on_endpoint_switch(self, event: EndpointSwitch) -> None:
        if event.after_failure:
            self.stats.failovers += 1
        else:
            self.stats.failbacks += 1
            for stream in list(self._streams):
                stream.return_to_primary()
        self.emit("endpoint_switched", event)

    async def _probe_endpoint(self, url: str) -> None:
        """Raise unless ``url`` accepts a stream now: upgrade (no cold-start wait), the
        first message, then a ``health_check`` answered (Whisper) or, for a dialect with
        no probe, no error or close for ``PROBE_QUIET_S``. Sends no audio."""
        dialect = dialect_for(self._opts)
        ws = await open_websocket(
            session=self._ensure_session(),
            url=url,
            api_key=self._api_key,
            ssl_context=self._ssl_context,
            connect_timeout_s=DEFAULT_API_CONNECT_OPTIONS.timeout,
            cold_start_timeout_s=0.0,
            on_handshake_retry=lambda status, delay: None,
        )
        try:
            await ws.send_str(dialect.first_message(self._opts))
            probe = dialect.keepalive_message("failback-probe", time.time())
            if probe is not None:
                await ws.send_str(probe)
            deadline = time.monotonic() + (PROBE_REPLY_TIMEOUT_S if probe else PROBE_QUIET_S)
            while (left := deadline - time.monotonic()) > 0:
                try:
                    msg = await ws.receive(timeout=left)
                except TimeoutError:
                    break
                if msg.type != aiohttp.WSMsgType.TEXT:
                    raise ConnectionError(f"probe socket ended ({msg.type.name})")
                try:
                    reply = parse_server_message(msg.data)
                except ValueError:
                    continue
                if isinstance(reply, HealthCheckReply):
                    return
                if isinstance(reply, ErrorFrame | SessionCreated):
                    raise ConnectionError(f"probe answered {type(reply).__name__}")
            if probe is not None:
                raise ConnectionError("no health_check reply to the probe")
        finally:
            await ws.close()

    async def aclose(self) -> None:
        await self._pool.aclose()
        await asyncio.gather(*(s.aclose() for s in list(self._streams)), return_exceptions=True)
        self._streams.clear()
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None
            self._owns_session = False
