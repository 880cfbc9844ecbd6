"""The client against the local Baseten server: transcripts, events, framing, ending."""

from __future__ import annotations

import asyncio
import logging
import math

import numpy as np
import pytest
from livekit.agents import stt as lk_stt
from livekit.agents.metrics import STTMetrics

from localdev.speech import silence
from localdev.wer import normalise
from plugins.baseten_stt import STT, TranscriptLatency
from tests.fixtures.baseten import TEST_PHRASES
from tests.fixtures.plugin import plugin_speech, push_audio, run_stt

E = lk_stt.SpeechEventType
KEY = "test-key-8d1f"
ROUTE = "/environments/production/websocket"
TWO = [TEST_PHRASES[0], TEST_PHRASES[2]]  # "open the front door", "hello how are you"
#: What each of ``TWO`` must be heard as: its words, case and punctuation aside.
TWO_WORDS = [normalise(p) for p in TWO]


def make_stt(srv, **kw) -> STT:
    kw.setdefault("keepalive_interval_s", 0.5)
    kw.setdefault("stall_timeout_s", 3.0)
    return STT(api_key=KEY, model_endpoint=srv.url + ROUTE, **kw)


def heard(texts: list[str]) -> list[list[str]]:
    """Each transcript as comparable words (Whisper adds casing and punctuation)."""
    return [normalise(t) for t in texts]


def assert_utterance_grammar(types: list[lk_stt.SpeechEventType]) -> None:
    """START (INTERIM)* FINAL END per utterance; usage events anywhere."""
    speaking = False
    got_final = False
    for t in types:
        if t == E.RECOGNITION_USAGE:
            continue
        if t == E.START_OF_SPEECH:
            assert not speaking, types
            speaking, got_final = True, False
        elif t == E.INTERIM_TRANSCRIPT:
            assert speaking and not got_final, types
        elif t == E.FINAL_TRANSCRIPT:
            assert speaking and not got_final, types
            got_final = True
        elif t == E.END_OF_SPEECH:
            assert speaking, types
            speaking = False
    assert not speaking, types


async def test_transcribes_with_ordered_events_usage_and_latency(baseten_server) -> None:
    srv = await baseten_server(api_key=KEY)
    stt = make_stt(srv)
    latencies: list[TranscriptLatency] = []
    metrics: list[STTMetrics] = []
    stt.on("transcript_latency", latencies.append)
    stt.on("metrics_collected", metrics.append)
    pcm, onsets = plugin_speech(TWO)
    run = await run_stt(stt, pcm)
    await stt.aclose()

    assert run.error is None
    assert heard(run.finals) == TWO_WORDS, run.finals
    assert_utterance_grammar(run.types)
    assert run.types.count(E.START_OF_SPEECH) == 2
    assert run.types.count(E.INTERIM_TRANSCRIPT) >= 1

    finals = run.of(E.FINAL_TRANSCRIPT)
    for ev, onset in zip(finals, onsets, strict=True):
        alt = ev.alternatives[0]
        assert alt.language == "en"
        assert 0.0 < alt.confidence <= 1.0
        assert alt.words and normalise(" ".join(str(w) for w in alt.words)) == normalise(alt.text)
        assert abs(alt.start_time - onset) < 0.5  # on the stream timeline
        assert alt.end_time > alt.start_time
        assert ev.speech_end_time is not None and ev.speech_end_time <= ev.created_at

    # usage covers exactly the audio pushed, and reached LiveKit's STT metrics
    usage = sum(e.recognition_usage.audio_duration for e in run.of(E.RECOGNITION_USAGE))
    assert usage == pytest.approx(len(pcm) / 16000, abs=0.01)
    assert sum(m.audio_duration for m in metrics) == pytest.approx(usage, abs=1e-6)

    assert heard([lat.text for lat in latencies]) == TWO_WORDS
    for lat in latencies:
        assert 0.0 < lat.latency_s < 10.0
        assert lat.received_wall_time - lat.speech_end_wall_time == pytest.approx(lat.latency_s)
        assert lat.reconnects_so_far == 0 and lat.audio_duration_s > 0

    # ended by itself: end_audio sent, finished received, no server-side close
    s = srv.stats
    assert s.end_audio_received == 1 and s.finished_sent == 1
    assert s.close_codes_sent == [] and s.client_disconnects == 1
    assert stt.stats.finals == 2 and stt.stats.reconnects == 0


async def test_exact_frames_with_padded_tail(baseten_server) -> None:
    srv = await baseten_server(api_key=KEY)
    stt = make_stt(srv)
    pcm, _ = plugin_speech([TEST_PHRASES[4]])
    pcm = np.concatenate([pcm, silence(0.0101)])  # force a partial last frame
    assert len(pcm) % 512 != 0
    run = await run_stt(stt, pcm)
    await stt.aclose()
    assert run.error is None and heard(run.finals) == [normalise(TEST_PHRASES[4])], run.finals
    # every frame was exactly 1024 bytes (the server counts any other size as bad and
    # fatal) and the tail was padded rather than dropped
    assert srv.stats.bad_frames == 0
    assert srv.stats.frames_received == math.ceil(len(pcm) / 512)
    assert stt.stats.frames_sent == srv.stats.frames_received


async def test_48khz_input_is_resampled(baseten_server) -> None:
    srv = await baseten_server(api_key=KEY)
    stt = make_stt(srv)
    pcm, _ = plugin_speech(TWO, sample_rate=48_000)
    run = await run_stt(stt, pcm, sample_rate=48_000)
    await stt.aclose()
    assert run.error is None and heard(run.finals) == TWO_WORDS, run.finals
    assert srv.stats.bad_frames == 0
    assert srv.stats.audio_seconds_received == pytest.approx(len(pcm) / 48_000, abs=0.1)


async def test_mulaw_sends_8khz_256_byte_frames(baseten_server) -> None:
    srv = await baseten_server(api_key=KEY)
    stt = make_stt(srv, encoding="pcm_mulaw")
    pcm, _ = plugin_speech(TWO, sample_rate=48_000)
    run = await run_stt(stt, pcm, sample_rate=48_000)
    await stt.aclose()
    assert run.error is None and heard(run.finals) == TWO_WORDS, run.finals
    first = srv.stats.last_first_message
    assert first is not None and first.streaming_params.encoding == "pcm_mulaw"
    assert first.streaming_params.sample_rate == 8000
    assert srv.stats.bad_frames == 0
    # 256-byte frames of 8 kHz audio: 32 ms each
    assert srv.stats.frames_received == pytest.approx(len(pcm) / 48_000 / 0.032, abs=3)


async def test_silent_caller_is_kept_alive_with_health_checks(baseten_server) -> None:
    srv = await baseten_server(api_key=KEY)
    stt = make_stt(srv, keepalive_interval_s=0.2, stall_timeout_s=1.0)
    stream = stt.stream()
    events: list[lk_stt.SpeechEvent] = []

    async def consume() -> None:
        async for ev in stream:
            events.append(ev)

    consumer = asyncio.create_task(consume())
    await srv.wait_for(lambda s: s.health_checks >= 4, within_s=10)  # nothing pushed yet
    assert stt.stats.last_rtt_s is not None and stt.stats.last_rtt_s >= 0
    pcm, _ = plugin_speech([TEST_PHRASES[3]])
    await push_audio(stream, pcm, sample_rate=16_000)
    await asyncio.wait_for(consumer, 30)
    await stt.aclose()
    finals = [e.alternatives[0].text for e in events if e.type == E.FINAL_TRANSCRIPT]
    assert heard(finals) == [normalise(TEST_PHRASES[3])], finals
    assert stt.stats.reconnects == 0 and srv.stats.connections == 1


async def test_update_options_reaches_live_stream_at_utterance_boundary(baseten_server) -> None:
    srv = await baseten_server(api_key=KEY)
    stt = make_stt(srv)
    stream = stt.stream()
    events: list[lk_stt.SpeechEvent] = []

    async def consume() -> None:
        async for ev in stream:
            events.append(ev)

    consumer = asyncio.create_task(consume())
    first, _ = plugin_speech([TEST_PHRASES[0]])
    await push_audio(stream, first, sample_rate=16_000, end=False)
    stt.update_options(vad_min_silence_duration_ms=400, language="en")
    assert stt.options.vad_min_silence_duration_ms == 400
    second, _ = plugin_speech([TEST_PHRASES[2]])
    await push_audio(stream, second, sample_rate=16_000)
    await asyncio.wait_for(consumer, 30)
    await stt.aclose()
    finals = [e.alternatives[0].text for e in events if e.type == E.FINAL_TRANSCRIPT]
    assert heard(finals) == TWO_WORDS, finals
    assert srv.stats.connections == 2  # reconnected to apply the change
    sent = srv.stats.last_first_message
    assert sent is not None and sent.streaming_vad_config.min_silence_duration_ms == 400
    starts = [e.alternatives[0].start_time for e in events if e.type == E.FINAL_TRANSCRIPT]
    assert starts[1] > starts[0] + 1.0  # the timeline continued across the switch


async def test_recognize_batches_through_a_stream(baseten_server) -> None:
    srv = await baseten_server(api_key=KEY)
    stt = make_stt(srv)
    from livekit import rtc

    pcm, _ = plugin_speech(TWO)
    frame = rtc.AudioFrame(pcm.tobytes(), 16000, 1, len(pcm))
    ev = await stt.recognize(frame)
    await stt.aclose()
    assert ev.type == E.FINAL_TRANSCRIPT
    assert normalise(ev.alternatives[0].text) == normalise(" ".join(TWO)), ev.alternatives[0].text


async def test_api_key_never_logged(baseten_server, caplog: pytest.LogCaptureFixture) -> None:
    secret = "sk-RECOGNISABLE-5f3e9a"
    caplog.set_level(logging.DEBUG)
    srv = await baseten_server(api_key=secret)
    from localdev.baseten.faults import FaultPlan

    srv.faults = FaultPlan(drop_after_frames=30, reject_upgrades_with_503=1)
    good = STT(api_key=secret, model_endpoint=srv.url + ROUTE, keepalive_interval_s=0.3)
    pcm, _ = plugin_speech([TEST_PHRASES[0]])
    ok = await run_stt(good, pcm)
    bad = STT(api_key=secret + "-wrong", model_endpoint=srv.url + ROUTE)
    failed = await run_stt(bad, pcm[:1600])
    await good.aclose()
    await bad.aclose()
    assert heard(ok.finals) == [normalise(TEST_PHRASES[0])], ok.finals
    assert failed.error is not None
    assert caplog.records
    for rec in caplog.records:
        text = rec.getMessage() + repr(rec.__dict__)
        assert secret not in text, rec
    err = failed.error
    chain = []
    while err is not None:
        chain.append(repr(err) + str(err))
        err = err.__cause__ or err.__context__
    assert not any(secret in c for c in chain)
