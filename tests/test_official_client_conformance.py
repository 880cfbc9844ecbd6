"""The OFFICIAL ``livekit-plugins-baseten`` 1.8.9 STT against the local server.

Two purposes: (1) the official client, which works against real Baseten, transcribes
through our server, which is evidence that the server is wire-compatible; (2) each of its
known defects (protocol doc §8) is pinned as a test that documents it, so the vendored
plugin's fixes are measured against a baseline and a future upstream fix shows up here
as a failure to re-evaluate.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import numpy as np
import numpy.typing as npt
import pytest
from livekit import rtc
from livekit.agents import APIConnectOptions, stt

from localdev.baseten import FaultPlan, LocalBasetenServer
from localdev.speech import silence, synthesize
from localdev.wer import normalise
from plugins.baseten_stt.protocol import ErrorType
from tests.fixtures.baseten import (
    TEST_PHRASES,
    BasetenServerFactory,
    OfficialSttFactory,
    speech_with_silence,
)

KEY = "conformance-key"
SR = 16_000
#: 20 ms frames, what LiveKit's room audio delivers.
FRAME_SAMPLES = SR // 50
#: Longer than the official client's 5 s receive poll, so "still running" is not just
#: "between two polls".
GENEROUS_WAIT_S = 6.0
#: Fast retries so a reconnect happens within the test.
FAST_RETRY = APIConnectOptions(max_retry=1, retry_interval=0.1, timeout=5.0)


@pytest.fixture
async def srv(baseten_server: BasetenServerFactory) -> LocalBasetenServer:
    return await baseten_server(api_key=KEY)


class Run:
    """An official stream plus a task collecting its events."""

    def __init__(self, client: Any, stream: Any) -> None:
        self.client = client
        self.stream = stream
        self.events: list[stt.SpeechEvent] = []
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

    async def push_realtime(self, pcm: npt.NDArray[np.int16]) -> None:
        for i in range(0, len(pcm), FRAME_SAMPLES):
            chunk = pcm[i : i + FRAME_SAMPLES]
            self.stream.push_frame(rtc.AudioFrame(chunk.tobytes(), SR, 1, len(chunk)))
            await asyncio.sleep(len(chunk) / SR)

    async def wait_final(self, timeout_s: float = 15.0) -> stt.SpeechEvent:
        async with asyncio.timeout(timeout_s):
            await self._final.wait()
        return self.of(stt.SpeechEventType.FINAL_TRANSCRIPT)[0]

    async def aclose(self) -> None:
        await self.stream.aclose()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


@pytest.fixture
async def run_official(
    official_baseten_stt: OfficialSttFactory, srv: LocalBasetenServer
) -> AsyncIterator[Any]:
    runs: list[Run] = []

    def start(**stream_kwargs: Any) -> Run:
        client = official_baseten_stt(srv, api_key=KEY)
        run = Run(client, client.stream(**stream_kwargs))
        runs.append(run)
        return run

    yield start
    for run in runs:
        await run.aclose()


def padded_to_frames(pcm: npt.NDArray[np.int16], *, remainder: int) -> npt.NDArray[np.int16]:
    """Zero-pad so that ``len % 512 == remainder`` (0 = whole 512-sample frames)."""
    pad = (remainder - len(pcm)) % 512
    return np.concatenate([pcm, np.zeros(pad, dtype=np.int16)])


# --------------------------------------------------------------------------- it works
async def test_official_client_transcribes_espeak_speech(
    run_official: Any, srv: LocalBasetenServer
) -> None:
    phrase = TEST_PHRASES[0]
    run = run_official()
    await run.push_realtime(speech_with_silence(phrase, tail_s=1.0))
    final = await run.wait_final()
    assert normalise(final.alternatives[0].text) == normalise(phrase)
    assert final.alternatives[0].language == "en"
    words = final.alternatives[0].words or []
    assert normalise(" ".join(str(w) for w in words)) == normalise(phrase)
    assert words[0].start_time < words[-1].end_time
    interims = run.of(stt.SpeechEventType.INTERIM_TRANSCRIPT)
    assert interims, run.events
    # The first partial (after 1 s of speech) is the start of the phrase, heard so far.
    partial = normalise(interims[0].alternatives[0].text)
    assert partial and partial == normalise(phrase)[: len(partial)], partial
    # What it sent: Gen C first message with its own defaults (doc §8.10).
    first = srv.stats.last_first_message
    assert first is not None
    assert first.streaming_params.partial_transcript_interval_s == 1.0
    assert first.streaming_params.enable_partial_transcripts is True
    assert first.whisper_params.show_word_timestamps is True
    assert first.streaming_vad_config.speech_pad_ms == 30
    assert srv.stats.bad_frames == 0 and srv.stats.connections == 1


# --------------------------------------------------------------------------- known defects
async def test_defect_never_sends_end_audio(run_official: Any, srv: LocalBasetenServer) -> None:
    """§8.2: ``end_input()`` flushes audio but never sends ``{"type": "end_audio"}``."""
    run = run_official()
    pcm = padded_to_frames(speech_with_silence(TEST_PHRASES[2], tail_s=1.0), remainder=0)
    await run.push_realtime(pcm)
    await run.wait_final()
    run.stream.end_input()
    await asyncio.sleep(1.0)
    assert srv.stats.end_audio_received == 0
    assert srv.stats.finished_sent == 0


async def test_defect_unpadded_last_frame_is_fatal_and_loses_the_utterance(
    run_official: Any, srv: LocalBasetenServer
) -> None:
    """§8.2: the short last frame triggers the fatal AUDIO_PROCESSING_ERROR.

    Speech that ends without enough trailing silence for the server VAD is never
    finalised: the client should pad and send ``end_audio`` (which would flush it).
    """
    run = run_official(conn_options=FAST_RETRY)
    pcm = np.concatenate([silence(0.3), synthesize(TEST_PHRASES[4])[:-3000]])
    await run.push_realtime(padded_to_frames(pcm, remainder=100))
    run.stream.end_input()
    stats = await srv.wait_for(lambda s: s.bad_frames == 1 and s.streams_started == 2, within_s=10)
    assert stats.error_frames_sent == 1  # the AUDIO_PROCESSING_ERROR, then close 1000
    assert stats.close_codes_sent == [1000]
    assert stats.finals_sent == 0
    assert run.of(stt.SpeechEventType.FINAL_TRANSCRIPT) == []
    # The client treats the close as a transient failure and reconnects (the second
    # stream above, which will never receive audio) instead of surfacing the error.
    assert stats.connections == 2


async def test_defect_stream_does_not_end_after_end_input(
    run_official: Any, srv: LocalBasetenServer
) -> None:
    """§8.3: ``closing_ws`` is never set, so the stream outlives its input forever."""
    run = run_official()
    pcm = padded_to_frames(speech_with_silence(TEST_PHRASES[3], tail_s=1.0), remainder=0)
    await run.push_realtime(pcm)
    final = await run.wait_final()
    assert normalise(final.alternatives[0].text) == normalise(TEST_PHRASES[3])
    run.stream.end_input()
    await asyncio.sleep(GENEROUS_WAIT_S)
    assert not run.task.done(), "the official stream ended by itself (defect fixed upstream?)"
    assert srv.stats.active_connections == 1 and srv.stats.bad_frames == 0
    await run.aclose()  # only an explicit aclose() ends it
    assert run.task.done()


async def test_defect_no_speech_events_and_no_usage(
    run_official: Any, srv: LocalBasetenServer
) -> None:
    """§8.4: only INTERIM/FINAL transcripts; no START/END_OF_SPEECH, no RECOGNITION_USAGE."""
    run = run_official()
    await run.push_realtime(speech_with_silence(TEST_PHRASES[1], tail_s=1.0))
    await run.wait_final()
    await asyncio.sleep(0.5)
    kinds = {e.type for e in run.events}
    assert stt.SpeechEventType.FINAL_TRANSCRIPT in kinds
    assert kinds <= {stt.SpeechEventType.INTERIM_TRANSCRIPT, stt.SpeechEventType.FINAL_TRANSCRIPT}
    # ...and confidence is read from a field the server never sends (§8.8).
    assert all(e.alternatives[0].confidence == 0.0 for e in run.events)


async def test_defect_handshake_503_is_not_retried(
    run_official: Any, srv: LocalBasetenServer
) -> None:
    """§8.6: a 503 at the upgrade escapes as a non-APIError, so the stream dies at once."""
    srv.faults = FaultPlan(reject_upgrades_with_503=1)
    run = run_official(conn_options=FAST_RETRY)
    async with asyncio.timeout(10):
        await run.task
    assert isinstance(run.error, aiohttp.WSServerHandshakeError)
    assert run.error.status == 503
    # One attempt, no retry, although the server would have accepted the next one.
    assert srv.stats.upgrade_attempts == 1 and srv.stats.connections == 0


async def test_defect_server_error_frames_are_ignored(
    run_official: Any, srv: LocalBasetenServer
) -> None:
    """§8.5: error frames are logged at debug and dropped: no error event reaches the app."""
    from localdev.baseten import InjectedError

    srv.faults = FaultPlan(inject_errors=[InjectedError(after_frames=3, message="injected")])
    run = run_official()
    errors: list[Any] = []
    run.client.on("error", errors.append)
    await run.push_realtime(speech_with_silence(TEST_PHRASES[2], tail_s=1.0))
    final = await run.wait_final()
    assert srv.stats.errors_injected == 1
    assert normalise(final.alternatives[0].text) == normalise(TEST_PHRASES[2])
    assert errors == []
    assert ErrorType.TRANSCRIPTION_ERROR.value not in str(run.events)
