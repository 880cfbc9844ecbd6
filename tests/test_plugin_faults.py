"""Every fault the local server injects: zero words lost, no final duplicated."""

from __future__ import annotations

import asyncio
import json

import pytest
from livekit.agents import APIConnectionError, APIStatusError
from livekit.agents import stt as lk_stt

from localdev.baseten.faults import FaultPlan, InjectedError
from localdev.speech import synthesize
from localdev.wer import normalise
from plugins.baseten_stt import STT
from plugins.baseten_stt.models import STTOptions
from plugins.baseten_stt.protocol import ErrorType
from tests.fixtures.baseten import TEST_PHRASES
from tests.fixtures.plugin import LEAD_S, StreamRun, plugin_speech, push_audio, run_stt

E = lk_stt.SpeechEventType
KEY = "fault-key-21c7"
ROUTE = "/environments/production/websocket"
FRAME_SAMPLES = 512  # one s16le protocol frame
TWO = [TEST_PHRASES[0], TEST_PHRASES[2]]  # ~0.3-2.0 s and ~2.9-4.2 s of stream time


def make_stt(srv, **kw) -> STT:
    kw.setdefault("keepalive_interval_s", 0.3)
    kw.setdefault("stall_timeout_s", 1.5)
    return STT(api_key=KEY, model_endpoint=srv.url + ROUTE, **kw)


async def transcribe(srv, **kw):
    stt = make_stt(srv, **kw)
    pcm, onsets = plugin_speech(TWO)
    run = await run_stt(stt, pcm)
    await stt.aclose()
    return stt, run, onsets


def assert_all_words_once(run, onsets) -> None:
    assert run.error is None, run.error
    # Nothing lost, nothing twice: each utterance's final holds exactly its words, in order
    # (compared as words: Whisper adds casing and punctuation).
    assert [normalise(f) for f in run.finals] == [normalise(p) for p in TWO], run.finals
    types = [t for t in run.types if t != E.RECOGNITION_USAGE]
    assert types.count(E.START_OF_SPEECH) == types.count(E.END_OF_SPEECH) == 2
    # timestamps stay on one continuous stream timeline across connections
    for ev, onset in zip(run.of(E.FINAL_TRANSCRIPT), onsets, strict=True):
        assert abs(ev.alternatives[0].start_time - onset) < 0.5


async def test_503_upgrades_are_retried_with_backoff(baseten_server) -> None:
    srv = await baseten_server(api_key=KEY)
    srv.faults = FaultPlan(reject_upgrades_with_503=3)
    stt, run, onsets = await transcribe(srv)
    assert_all_words_once(run, onsets)
    assert srv.stats.unavailable_503 == 3 and stt.stats.handshake_retries == 3
    assert srv.stats.connections == 1


async def test_503_beyond_the_cold_start_budget_is_a_retryable_error(baseten_server) -> None:
    srv = await baseten_server(api_key=KEY)
    srv.faults = FaultPlan(reject_upgrades_with_503=10_000)
    stt = make_stt(srv, cold_start_timeout_s=1.0)
    pcm, _ = plugin_speech([TEST_PHRASES[0]])
    from livekit.agents import APIConnectOptions

    stream = stt.stream(conn_options=APIConnectOptions(max_retry=0, timeout=5))
    stream.push_frame(
        __import__("livekit.rtc", fromlist=["AudioFrame"]).AudioFrame(
            pcm[:1600].tobytes(), 16000, 1, 1600
        )
    )
    with pytest.raises(APIStatusError) as info:
        async for _ in stream:
            pass
    await stt.aclose()
    assert info.value.status_code == 503 and info.value.retryable
    assert "cold_start_timeout_s" in info.value.message
    assert stt.stats.handshake_retries >= 2


@pytest.mark.parametrize("drops", [1, 2])
async def test_tcp_drop_mid_utterance_replays_unfinalised_audio(baseten_server, drops) -> None:
    srv = await baseten_server(api_key=KEY)
    srv.faults = FaultPlan(drop_after_frames=35, drop_connections=drops)  # 1.1 s: mid-word
    stt, run, onsets = await transcribe(srv)
    assert_all_words_once(run, onsets)
    assert srv.stats.dropped_connections == drops
    assert stt.stats.reconnects == drops and stt.stats.replayed_frames >= 35 * drops
    assert srv.stats.bad_frames == 0


async def test_drop_between_utterances_does_not_repeat_the_first(baseten_server) -> None:
    pcm, onsets = plugin_speech(TWO)
    # The gap before the second phrase is withheld until the first final has reached the
    # client, and the drop comes with the first frame after it: "after the first final"
    # then holds however long a decode takes on a busy machine.
    first_part = round(onsets[1] * 16_000)
    drop_at = first_part // FRAME_SAMPLES + 1
    first_speech_end = (round(LEAD_S * 16_000) + len(synthesize(TWO[0]))) // FRAME_SAMPLES + 1
    srv = await baseten_server(api_key=KEY)
    srv.faults = FaultPlan(drop_after_frames=drop_at)
    stt = make_stt(srv)
    run = StreamRun()
    first_final = asyncio.Event()
    stream = stt.stream()

    async def consume() -> None:
        async for ev in stream:
            run.events.append(ev)
            if ev.type == E.FINAL_TRANSCRIPT:
                first_final.set()

    consumer = asyncio.create_task(consume())
    await push_audio(stream, pcm[:first_part], sample_rate=16_000, end=False)
    await asyncio.wait_for(first_final.wait(), 30)
    assert srv.stats.dropped_connections == 0
    await push_audio(stream, pcm[first_part:], sample_rate=16_000)
    await asyncio.wait_for(consumer, 60)
    await stream.aclose()
    await stt.aclose()
    assert_all_words_once(run, onsets)
    assert srv.stats.dropped_connections == 1 and stt.stats.reconnects == 1
    # only the unfinalised tail was replayed: no frame of the first utterance's speech
    assert 0 < stt.stats.replayed_frames <= drop_at - first_speech_end


async def test_stalled_server_is_detected_and_replayed(baseten_server) -> None:
    srv = await baseten_server(api_key=KEY)
    srv.faults = FaultPlan(stall_after_frames=40)
    stt, run, onsets = await transcribe(srv)
    assert_all_words_once(run, onsets)
    assert srv.stats.stalled_connections == 1
    assert stt.stats.stalls == 1 and stt.stats.reconnects == 1


async def test_slow_inference_loses_nothing_and_shows_in_latency(baseten_server) -> None:
    srv = await baseten_server(api_key=KEY)
    srv.faults = FaultPlan(inference_delay_s=1.0)
    stt = make_stt(srv)
    lats: list[float] = []
    stt.on("transcript_latency", lambda lat: lats.append(lat.latency_s))
    pcm, onsets = plugin_speech(TWO)
    run = await run_stt(stt, pcm)
    await stt.aclose()
    assert_all_words_once(run, onsets)
    assert stt.stats.reconnects == 0
    assert len(lats) == 2 and min(lats) >= 1.0


async def test_recoverable_error_frames_are_counted_not_fatal(baseten_server) -> None:
    srv = await baseten_server(api_key=KEY)
    srv.faults = FaultPlan(
        inject_errors=[InjectedError(after_frames=20), InjectedError(after_frames=90)]
    )
    stt, run, onsets = await transcribe(srv)
    assert_all_words_once(run, onsets)
    assert srv.stats.errors_injected == 2
    assert stt.stats.recoverable_errors == 2
    assert stt.stats.fatal_errors == 0 and stt.stats.reconnects == 0


async def test_fatal_error_frame_reconnects_and_replays(baseten_server) -> None:
    srv = await baseten_server(api_key=KEY)
    srv.faults = FaultPlan(
        inject_errors=[
            InjectedError(
                after_frames=35,
                error_type=ErrorType.AUDIO_PROCESSING_ERROR,
                recoverable=False,
                message="Injected fault: audio pipeline died",
            )
        ]
    )
    stt, run, onsets = await transcribe(srv)
    assert_all_words_once(run, onsets)
    assert stt.stats.fatal_errors == 1 and stt.stats.reconnects == 1


async def test_persistent_fatal_errors_end_in_an_api_error(baseten_server) -> None:
    srv = await baseten_server(api_key=KEY)
    srv.faults = FaultPlan(
        inject_errors=[
            InjectedError(after_frames=10, recoverable=False, message="boom", connections=99)
        ]
    )
    _, run, _ = await transcribe(srv)
    assert isinstance(run.error, APIConnectionError)
    assert "boom" in str(run.error)


async def test_401_is_non_retryable_and_names_the_cause(baseten_server) -> None:
    srv = await baseten_server(api_key=KEY)
    stt = STT(api_key="wrong-key-77aa", model_endpoint=srv.url + ROUTE)
    errors: list[object] = []
    stt.on("error", errors.append)
    pcm, _ = plugin_speech([TEST_PHRASES[0]])
    run = await run_stt(stt, pcm)
    await stt.aclose()
    err = run.error
    assert isinstance(err, APIStatusError)
    assert err.status_code == 401 and not err.retryable
    assert "401" in str(err) and "API key" in str(err)
    assert "wrong-key-77aa" not in repr(err) + str(err)
    assert err.__cause__ is None  # aiohttp's request info (with headers) is not chained
    assert srv.stats.auth_failures == 1  # not retried
    assert len(errors) == 1


async def test_schema_rejection_1011_is_non_retryable(
    baseten_server,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A deployment speaking another schema generation rejects our first message (Gen A
    # key here) with 1011, exactly like the local server's strict validation.
    original = STTOptions.whisper_first_message

    def gen_a(self: STTOptions) -> str:
        msg = json.loads(original(self))
        msg["vad_params"] = {"threshold": 0.5}
        return json.dumps(msg)

    monkeypatch.setattr(STTOptions, "whisper_first_message", gen_a)
    srv = await baseten_server(api_key=KEY)
    stt = make_stt(srv)
    pcm, _ = plugin_speech([TEST_PHRASES[0]])
    run = await run_stt(stt, pcm)
    await stt.aclose()
    err = run.error
    assert isinstance(err, APIStatusError) and not err.retryable
    assert err.status_code == 1011 and "schema" in err.message
    assert srv.stats.bad_first_messages == 1 and srv.stats.connections == 1
