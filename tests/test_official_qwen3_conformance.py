"""The OFFICIAL ``livekit-plugins-baseten`` 1.8.9 Qwen3-ASR path against the local server.

``STT(model="qwen3-asr", ...)`` (``livekit/plugins/baseten/qwen3_stt.py``) talks to
``LocalBasetenServer(protocol="qwen3")``. Two purposes, as for the Whisper path
(``test_official_client_conformance.py``): (1) the official client transcribes a human
recording through our server word for word, which is evidence that our Qwen3 dialect is
wire-compatible with what the client was written against; (2) each of its defects listed
in ``shared/docs/baseten-qwen3-protocol.md`` §3 that a test can show is pinned here,
asserting the *bad* behaviour: a test that starts failing means the official client
changed, and the vendored plugin's comparison should be re-evaluated.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from livekit import rtc
from livekit.agents import APIConnectOptions, APIStatusError, stt
from livekit.agents.metrics import STTMetrics

from localdev.baseten import FaultPlan, InjectedError, LocalBasetenServer
from localdev.human_speech import clip
from localdev.speech import silence
from localdev.wer import normalise
from tests.fixtures.baseten import (
    TEST_PHRASES,
    BasetenServerFactory,
    OfficialSttFactory,
    speech_with_silence,
)
from tests.fixtures.plugin import silent_tcp_server

KEY = "qwen3-conformance-key"
SR = 16_000
#: 20 ms frames, what LiveKit's room audio delivers.
FRAME_SAMPLES = SR // 50
#: Fast retries so a reconnect happens within the test.
FAST_RETRY = APIConnectOptions(max_retry=1, retry_interval=0.1, timeout=5.0)
#: How long "it never ends" is watched for (the official stream has no receive timeout).
HANG_WATCH_S = 3.0


@pytest.fixture
async def srv(baseten_server: BasetenServerFactory) -> LocalBasetenServer:
    return await baseten_server(api_key=KEY, protocol="qwen3")


class Run:
    """An official Qwen3 stream plus a task collecting its events (and the STT's)."""

    def __init__(self, client: Any, stream: Any) -> None:
        self.client = client
        self.stream = stream
        self.events: list[stt.SpeechEvent] = []
        self.errors: list[Any] = []
        self.metrics: list[Any] = []
        client.on("error", self.errors.append)
        client.on("metrics_collected", self.metrics.append)
        self.error: BaseException | None = None
        self._final = asyncio.Event()
        self.task = asyncio.create_task(self._consume())

    async def _consume(self) -> None:
        try:
            async for event in self.stream:
                self.events.append(event)
                if event.type == stt.SpeechEventType.FINAL_TRANSCRIPT:
                    self._final.set()
        except Exception as exc:  # the stream's own failure, re-raised by __anext__
            self.error = exc

    def of(self, kind: stt.SpeechEventType) -> list[stt.SpeechEvent]:
        return [e for e in self.events if e.type == kind]

    @property
    def final_texts(self) -> list[str]:
        return [e.alternatives[0].text for e in self.of(stt.SpeechEventType.FINAL_TRANSCRIPT)]

    def push(self, pcm: npt.NDArray[np.int16], *, channels: int = 1) -> None:
        """All of ``pcm`` at once (``channels`` interleaved), in 20 ms frames."""
        step = FRAME_SAMPLES * channels
        for i in range(0, len(pcm), step):
            chunk = pcm[i : i + step]
            frame = rtc.AudioFrame(chunk.tobytes(), SR, channels, len(chunk) // channels)
            self.stream.push_frame(frame)

    async def push_paced(self, pcm: npt.NDArray[np.int16], *, speed: float = 1.0) -> None:
        """``pcm`` in 20 ms frames at ``speed`` x real time, as a room delivers it."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        for i in range(0, len(pcm), FRAME_SAMPLES):
            chunk = pcm[i : i + FRAME_SAMPLES]
            self.stream.push_frame(rtc.AudioFrame(chunk.tobytes(), SR, 1, len(chunk)))
            due = started + (i + len(chunk)) / SR / speed
            await asyncio.sleep(max(0.0, due - loop.time()))

    async def wait_final(self, timeout_s: float = 10.0) -> stt.SpeechEvent:
        async with asyncio.timeout(timeout_s):
            await self._final.wait()
        return self.of(stt.SpeechEventType.FINAL_TRANSCRIPT)[0]

    async def wait_ended(self, timeout_s: float = 10.0) -> None:
        async with asyncio.timeout(timeout_s):
            await asyncio.shield(self.task)

    async def aclose(self) -> None:
        await self.stream.aclose()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


@pytest.fixture
async def run_official(
    official_baseten_stt: OfficialSttFactory, srv: LocalBasetenServer
) -> AsyncIterator[Any]:
    runs: list[Run] = []

    def start(*, conn_options: APIConnectOptions | None = None, **stt_kwargs: Any) -> Run:
        client = official_baseten_stt(srv, api_key=KEY, model="qwen3-asr", **stt_kwargs)
        stream = client.stream(**({"conn_options": conn_options} if conn_options else {}))
        run = Run(client, stream)
        runs.append(run)
        return run

    yield start
    for run in runs:
        await run.aclose()


# --------------------------------------------------------------------------- it works
async def test_official_qwen3_client_transcribes_a_human_clip(
    run_official: Any, srv: LocalBasetenServer
) -> None:
    """Real-time room audio of a human speaker: partials, one VAD final with the words,
    START/END_OF_SPEECH around it; ``end_input()`` commits and the empty flush reply
    (with ``is_final``) ends the stream, as the official client expects."""
    speech = clip("audioeval_quick_brown_fox")
    run = run_official()
    await run.push_paced(np.concatenate([silence(0.3), speech.samples(), silence(1.0)]))
    final = await run.wait_final()
    assert normalise(final.alternatives[0].text) == normalise(speech.text)
    assert final.alternatives[0].language == "en"  # "English" mapped by the client
    assert run.of(stt.SpeechEventType.INTERIM_TRANSCRIPT), run.events
    kinds = [e.type for e in run.events]
    assert kinds[0] == stt.SpeechEventType.START_OF_SPEECH
    assert kinds.index(stt.SpeechEventType.END_OF_SPEECH) > kinds.index(
        stt.SpeechEventType.FINAL_TRANSCRIPT
    )
    run.stream.end_input()
    await run.wait_ended()
    assert run.error is None and run.errors == []
    # What it sent: its handshake (doc §2.1), audio, one commit, answered.
    hs = srv.stats.last_handshake
    assert hs is not None and hs.whisper.audio_language == "auto"
    assert hs.streaming.partial_transcript_interval_s == 0.5
    assert hs.vad.min_silence_duration_ms == 500 and hs.vad.speech_pad_ms == 100
    assert srv.stats.commits_received == 1 and srv.stats.flush_replies_sent == 1
    assert srv.stats.binary_frames_rejected == 0 and srv.stats.stream_errors_sent == 0
    assert srv.stats.connections == 1


# --------------------------------------------------------------------------- known defects
async def test_defect_1_no_manual_flush_capability(run_official: Any) -> None:
    """§3.1 (official client's defect): ``capabilities.manual_flush`` is False although
    the protocol has a commit, so an ``AgentSession`` never commits mid-call and every
    final waits for server-VAD silence plus inference."""
    run = run_official()
    assert run.client.capabilities.manual_flush is False


async def test_defect_2_flush_reply_without_is_final_hangs_the_stream(
    run_official: Any, srv: LocalBasetenServer
) -> None:
    """§3.2 (official client's defect): the end of the session is only recognised on a
    flush reply that also has ``is_final: true``; without it the stream never ends (no
    receive timeout), although the server answered the commit."""
    srv.faults = FaultPlan(flush_reply_without_is_final=True)
    run = run_official()
    run.push(speech_with_silence(TEST_PHRASES[0], tail_s=0.1))
    run.stream.end_input()
    await srv.wait_for(lambda s: s.flush_replies_sent == 1)
    with pytest.raises(TimeoutError):
        await run.wait_ended(HANG_WATCH_S)
    assert not run.task.done() and srv.stats.active_connections == 1
    # The reply carried the words; the client never turned them into a final.
    assert normalise(srv.stats.final_texts[-1]) == normalise(TEST_PHRASES[0])
    assert run.final_texts == []
    await run.aclose()


async def test_defect_3_close_after_commit_loses_the_last_final_silently(
    run_official: Any, srv: LocalBasetenServer
) -> None:
    """§3.3 (official client's defect): a server close (1000) after the commit but before
    the flush reply counts as success: the stream ends with no error, and the utterance
    the commit was for is lost (the close code is never read)."""
    srv.faults = FaultPlan(close_after_commit=1)
    run = run_official(conn_options=FAST_RETRY)
    run.push(speech_with_silence(TEST_PHRASES[1], tail_s=0.1))  # too short for a VAD final
    run.stream.end_input()
    await run.wait_ended()
    assert run.error is None and run.errors == []
    assert run.final_texts == []
    assert srv.stats.commits_received == 1 and srv.stats.flush_replies_sent == 0
    assert srv.stats.close_codes_sent == [1000] and srv.stats.connections == 1


async def test_defect_4_error_key_reads_as_unknown_stt_error_500(
    run_official: Any, srv: LocalBasetenServer
) -> None:
    """§3.4 (official client's defect): only a top-level ``message`` is read, so an error
    frame ``{"type":"error","error":"..."}`` surfaces as "unknown STT error"; every error
    frame becomes a retryable status 500 (the client reconnects)."""
    srv.faults = FaultPlan(
        error_shape="error", inject_errors=[InjectedError(after_frames=3, message="overloaded")]
    )
    run = run_official(conn_options=FAST_RETRY)
    run.push(speech_with_silence(TEST_PHRASES[2], tail_s=0.1))
    await srv.wait_for(lambda s: s.errors_injected == 1 and s.connections == 2)
    (error,) = run.errors
    assert isinstance(error.error, APIStatusError)
    assert error.error.message == "unknown STT error"  # the server's "overloaded" is lost
    assert error.error.status_code == 500 and error.error.retryable and error.recoverable


async def test_defect_4_recoverable_error_still_costs_the_socket(
    run_official: Any, srv: LocalBasetenServer
) -> None:
    """§3.4 (official client's defect): no recoverable/fatal distinction: an error frame
    the server marks ``recoverable: true`` (and keeps serving after) still tears the
    socket down as a status 500 and reconnects."""
    srv.faults = FaultPlan(inject_errors=[InjectedError(after_frames=3, message="hiccup")])
    run = run_official(conn_options=FAST_RETRY)
    run.push(speech_with_silence(TEST_PHRASES[2], tail_s=0.1))
    await srv.wait_for(lambda s: s.errors_injected == 1 and s.connections == 2)
    (error,) = run.errors
    assert isinstance(error.error, APIStatusError)
    assert error.error.message == "hiccup" and error.error.status_code == 500


async def test_defect_5_a_drop_mid_utterance_loses_its_words(
    run_official: Any, srv: LocalBasetenServer
) -> None:
    """§3.5 (official client's defect): audio is consumed once; after a TCP drop in the
    middle of an utterance the client reconnects and goes on with the *next* audio, so
    what the dropped socket had (the start of the utterance) is never replayed."""
    words = clip("endgame_ditch")
    pcm = np.concatenate([silence(0.3), words.samples(), silence(1.0)])
    drop_after_s = 1.5  # "Do you remember the day ..." is under way
    srv.faults = FaultPlan(drop_after_frames=round(drop_after_s * SR / 512))
    run = run_official(conn_options=FAST_RETRY)
    await run.push_paced(pcm, speed=2.0)
    await srv.wait_for(lambda s: s.finals_sent >= 1 and s.connections == 2)
    heard = normalise(" ".join(run.final_texts))
    said = normalise(words.text)
    assert srv.stats.dropped_connections == 1 and srv.stats.handshakes_received == 2
    assert said[:3] == ["do", "you", "remember"] and heard[:3] != said[:3], heard
    assert len(heard) < len(said), heard
    # No replay: the server received no more audio than was pushed (less: in flight).
    assert srv.stats.audio_seconds_received <= len(pcm) / SR + 0.01


async def test_defect_7_stereo_frames_are_sent_as_mono_at_twice_the_duration(
    run_official: Any, srv: LocalBasetenServer
) -> None:
    """§3.7 (official client's defect): no channel check: 1 s of stereo frames reaches
    the server as 2 s of "mono" audio (the channels interleaved)."""
    mono = speech_with_silence(TEST_PHRASES[4], tail_s=0.1)[:SR]  # exactly 1 s
    run = run_official()
    run.push(np.repeat(mono, 2), channels=2)  # L R L R ...
    run.stream.end_input()
    await run.wait_ended()
    assert srv.stats.audio_seconds_received == pytest.approx(2.0, abs=0.01)


async def test_defect_9_no_recognition_usage_and_11_confidence_always_one(
    run_official: Any, srv: LocalBasetenServer
) -> None:
    """§3.9 (official client's defect): no ``RECOGNITION_USAGE`` events, so no STT
    metrics; §3.11: ``confidence`` is fixed at 1.0 although the server's word ``prob``s
    are read (and are below 1)."""
    run = run_official(show_word_timestamps=True)
    run.push(speech_with_silence(TEST_PHRASES[3], tail_s=1.0))
    final = await run.wait_final()
    run.stream.end_input()
    await run.wait_ended()
    assert normalise(final.alternatives[0].text) == normalise(TEST_PHRASES[3])
    kinds = {e.type for e in run.events}
    assert stt.SpeechEventType.RECOGNITION_USAGE not in kinds
    assert not [m for m in run.metrics if isinstance(m, STTMetrics)]
    transcripts = [e for e in run.events if e.alternatives]
    assert transcripts and all(e.alternatives[0].confidence == 1.0 for e in transcripts)
    word_probs = [w.confidence for w in final.alternatives[0].words or []]
    assert word_probs and min(word_probs) < 1.0, word_probs


async def test_defect_6_flush_then_end_input_drops_the_second_turn(
    run_official: Any, srv: LocalBasetenServer
) -> None:
    """§3.6 (official client's defect): ``flush()`` then more audio then ``end_input()``:
    the session ends at the *first* flush reply, so the second turn's reply (which the
    server sends) never becomes a final."""
    run = run_official()
    run.push(speech_with_silence(TEST_PHRASES[0], tail_s=0.1))
    run.stream.flush()
    run.push(speech_with_silence(TEST_PHRASES[2], tail_s=0.1))
    run.stream.end_input()
    await run.wait_ended()
    # The server read both commits and answered both (the second into a closing socket).
    await srv.wait_for(lambda s: s.commits_received == 2 and s.flush_replies_sent == 2)
    assert [normalise(t) for t in run.final_texts] == [normalise(TEST_PHRASES[0])]


async def test_defect_8_a_connect_timeout_is_retried_forever(
    official_baseten_stt: OfficialSttFactory,
) -> None:
    """Each timed-out attempt lasts just over the connect timeout, which LiveKit reads as
    "it had connected" and resets its retry counter: a dead endpoint is never reported.
    (Ours reports it after its budget: ``test_plugin_qwen3.py``.)"""
    async with silent_tcp_server() as port:

        class _Dead:
            url = f"ws://127.0.0.1:{port}"

        client = official_baseten_stt(_Dead(), api_key=KEY, model="qwen3-asr")
        stream = client.stream(
            conn_options=APIConnectOptions(max_retry=1, retry_interval=0.05, timeout=0.3)
        )
        run = Run(client, stream)
        run.push(silence(0.2))
        # max_retry=1 would allow two attempts (~0.7 s); it is still trying at 3 s
        await asyncio.sleep(HANG_WATCH_S)
        assert not run.task.done()
        assert len(run.errors) >= 4 and all(e.recoverable for e in run.errors)
        await run.aclose()
