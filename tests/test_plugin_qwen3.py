"""``STT(model="qwen3-asr")``: the Qwen3-ASR dialect on the shared stream core.

Through the local Qwen3-protocol server (real Whisper behind Baseten's Qwen3 wire
protocol, ``LocalBasetenServer(protocol="qwen3")``): hearing on recorded human speech,
commit on flush, and every fault mode (503 x N, TCP drop, stall, error frames in each
known shape, a close before or after the reply to a commit, a flush reply without
``is_final``) with every word heard exactly once. The same faults against the official
client are in ``test_official_qwen3_conformance.py``.
"""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest
from livekit import rtc
from livekit.agents import APIConnectionError, APIConnectOptions, APIStatusError
from livekit.agents import stt as lk_stt

from localdev.baseten.faults import FaultPlan, InjectedError
from localdev.human_speech import clip as clip_named
from localdev.speech import silence
from localdev.user_turns import from_clip
from localdev.wer import normalise, word_error_rate
from plugins.baseten_stt import STT
from tests.fixtures.baseten import TEST_PHRASES, BasetenServerFactory
from tests.fixtures.plugin import StreamRun, plugin_speech, run_stt, silent_tcp_server

E = lk_stt.SpeechEventType
KEY = "qwen3-key-5be1"
ROUTE = "/environments/production/websocket"
RATE = 16_000
TWO = [TEST_PHRASES[0], TEST_PHRASES[2]]  # ~0.3-2.0 s and ~2.9-4.2 s of stream time
#: Fault thresholds count 32 ms windows of audio in both dialects (localdev faults.py).
WINDOW_S = 512 / RATE
#: Less than the Qwen3 server VAD's 500 ms: without a commit no final could come yet.
SHORT_TAIL_S = 0.1
ENDPOINT = "wss://model-abc.api.baseten.co/v1/websocket"


async def qwen3_server(factory: BasetenServerFactory, **kw: object):  # type: ignore[no-untyped-def]
    return await factory(api_key=KEY, protocol="qwen3", **kw)


def make_stt(srv, **kw) -> STT:  # type: ignore[no-untyped-def]
    kw.setdefault("stall_timeout_s", 1.5)
    kw.setdefault("keepalive_interval_s", 0.3)
    kw.setdefault("finish_timeout_s", 3.0)
    return STT(model="qwen3-asr", api_key=KEY, model_endpoint=srv.url + ROUTE, **kw)


async def transcribe(srv, **kw):  # type: ignore[no-untyped-def]
    stt = make_stt(srv, **kw)
    pcm, onsets = plugin_speech(TWO)
    run = await run_stt(stt, pcm)
    await stt.aclose()
    return stt, run, onsets


def assert_all_words_once(run: StreamRun, onsets: list[float]) -> None:
    assert run.error is None, run.error
    assert [normalise(f) for f in run.finals] == [normalise(p) for p in TWO], run.finals
    types = [t for t in run.types if t != E.RECOGNITION_USAGE]
    assert types.count(E.START_OF_SPEECH) == types.count(E.END_OF_SPEECH) == 2
    for ev, onset in zip(run.of(E.FINAL_TRANSCRIPT), onsets, strict=True):
        assert abs(ev.alternatives[0].start_time - onset) < 0.6


def _speech(name: str) -> tuple[str, np.ndarray]:
    turn = from_clip(clip_named(name))
    return turn.text, turn.samples[: turn.samples.size - round(turn.tail_s * RATE)]


async def _push_real_time(stream: lk_stt.RecognizeStream, pcm: np.ndarray) -> None:
    frame = 320
    for i in range(0, len(pcm), frame):
        chunk = pcm[i : i + frame]
        stream.push_frame(rtc.AudioFrame(chunk.tobytes(), RATE, 1, len(chunk)))
        await asyncio.sleep(frame / RATE)


async def _next_final(stream: lk_stt.RecognizeStream, within_s: float) -> lk_stt.SpeechEvent:
    async with asyncio.timeout(within_s):
        async for ev in stream:
            if ev.type == E.FINAL_TRANSCRIPT:
                return ev
    raise AssertionError("stream ended without a final")


# --------------------------------------------------------------------------- drop-in
def test_defaults_and_language_names_follow_the_official_qwen3_path() -> None:
    import json

    stt = STT(
        model="qwen3-asr", api_key="k", model_endpoint="wss://model-abc.api.baseten.co/v1/websocket"
    )
    assert stt.model == "qwen3-asr" and stt.capabilities.manual_flush
    msg = json.loads(stt.options.first_message())
    assert msg["whisper_params"] == {"audio_language": "auto", "show_word_timestamps": False}
    assert msg["streaming_params"]["partial_transcript_interval_s"] == 0.5
    assert msg["streaming_vad_config"] == {
        "threshold": 0.5,
        "min_silence_duration_ms": 500,
        "speech_pad_ms": 100,
    }
    for given, sent in (("en", "English"), ("English", "English"), ("yue", "Cantonese")):
        stt = STT(
            model="qwen3-asr",
            api_key="k",
            model_endpoint="wss://model-abc.api.baseten.co/v1/websocket",
            language=given,
        )
        assert json.loads(stt.options.first_message())["whisper_params"]["audio_language"] == sent


async def test_human_speech_word_for_word_with_usage_and_confidence(
    baseten_server: BasetenServerFactory,
) -> None:
    srv = await qwen3_server(baseten_server)
    stt = make_stt(srv, show_word_timestamps=True)
    text, speech = _speech("audioeval_quick_brown_fox")
    run = await run_stt(stt, np.concatenate([silence(0.4), speech, silence(1.0)]))
    await stt.aclose()
    assert run.error is None, run.error
    heard = " ".join(run.finals)
    assert word_error_rate(text, heard) <= 0.1, heard
    final = run.of(E.FINAL_TRANSCRIPT)[0].alternatives[0]
    assert final.language == "en"  # the server says "English"
    assert 0.0 < final.confidence < 1.0  # from word probabilities, not a constant
    assert final.words and final.words[0].start_time >= 0.3
    usage = run.of(E.RECOGNITION_USAGE)
    assert usage and sum(u.recognition_usage.audio_duration for u in usage) == pytest.approx(
        (0.4 + speech.size / RATE + 1.0), abs=0.11
    )
    assert srv.stats.binary_frames_rejected == 0 and srv.stats.appends_received > 0


async def test_flush_commits_and_the_final_needs_no_server_silence(
    baseten_server: BasetenServerFactory,
) -> None:
    srv = await qwen3_server(baseten_server)
    # word times (a deployment with an aligner): segment times of CPU Whisper are coarse
    stt = make_stt(srv, show_word_timestamps=True)
    (text_a, first), (text_b, second) = (
        _speech("endgame_hear_me"),
        _speech("audioeval_quick_brown_fox"),
    )
    lead, gap = silence(0.5), silence(1.0)
    stream = stt.stream()
    try:
        await _push_real_time(stream, np.concatenate([lead, first, silence(SHORT_TAIL_S)]))
        stream.flush()
        ev1 = await _next_final(stream, within_s=10)
        await _push_real_time(stream, np.concatenate([gap, second, silence(SHORT_TAIL_S)]))
        stream.flush()
        ev2 = await _next_final(stream, within_s=10)
    finally:
        await stream.aclose()
        await stt.aclose()
    assert word_error_rate(text_a, ev1.alternatives[0].text) <= 0.1
    assert word_error_rate(text_b, ev2.alternatives[0].text) <= 0.1
    assert stt.stats.commits_sent >= 2 and srv.stats.commits_received >= 2
    assert stt.stats.flushes == 2 and stt.stats.reconnects == 0
    # word times on the caller's timeline: the frame padding of the first commit is not
    first_end = (lead.size + first.size) / RATE
    second_start = first_end + SHORT_TAIL_S + gap.size / RATE
    assert ev1.alternatives[0].end_time == pytest.approx(first_end, abs=0.35)
    assert ev2.alternatives[0].start_time >= second_start - 0.35
    assert ev2.alternatives[0].end_time == pytest.approx(
        second_start + second.size / RATE, abs=0.35
    )


# --------------------------------------------------------------------------- faults
async def test_503_upgrades_are_retried_with_backoff(baseten_server) -> None:
    srv = await qwen3_server(baseten_server)
    srv.faults = FaultPlan(reject_upgrades_with_503=3)
    stt, run, onsets = await transcribe(srv)
    assert_all_words_once(run, onsets)
    assert srv.stats.unavailable_503 == 3 and stt.stats.handshake_retries == 3


@pytest.mark.parametrize("drops", [1, 2])
async def test_tcp_drop_mid_utterance_replays_unfinalised_audio(baseten_server, drops) -> None:
    srv = await qwen3_server(baseten_server)
    srv.faults = FaultPlan(drop_after_frames=35, drop_connections=drops)  # 1.1 s: mid-word
    stt, run, onsets = await transcribe(srv)
    assert_all_words_once(run, onsets)
    assert srv.stats.dropped_connections == drops and stt.stats.reconnects == drops
    assert stt.stats.replayed_frames * 0.1 >= 35 * WINDOW_S * drops - 0.2


async def test_stalled_server_is_noticed_by_the_watchdog_and_replayed(baseten_server) -> None:
    # Qwen3 has no health_check: the watchdog sees an utterance open (partials came)
    # and nothing heard while audio flows.
    srv = await qwen3_server(baseten_server)
    srv.faults = FaultPlan(stall_after_frames=45)
    stt, run, onsets = await transcribe(srv)
    assert_all_words_once(run, onsets)
    assert srv.stats.stalled_connections == 1
    assert stt.stats.stalls == 1 and stt.stats.reconnects == 1


@pytest.mark.parametrize("shape", ["message", "error", "body"])
async def test_error_frames_in_every_shape_are_read(baseten_server, shape) -> None:
    srv = await qwen3_server(baseten_server)
    srv.faults = FaultPlan(
        error_shape=shape,
        inject_errors=[
            InjectedError(after_frames=20, message=f"recoverable {shape}"),
            InjectedError(after_frames=35, recoverable=False, message=f"fatal {shape}"),
        ],
    )
    stt, run, onsets = await transcribe(srv)
    assert_all_words_once(run, onsets)
    assert srv.stats.errors_injected == 2
    # The unflagged shapes cannot say "fatal": the close after it makes it one.
    assert stt.stats.recoverable_errors + stt.stats.fatal_errors >= 2
    assert stt.stats.reconnects == 1


async def test_persistent_errors_end_in_a_final_error_naming_the_cause(baseten_server) -> None:
    srv = await qwen3_server(baseten_server)
    srv.faults = FaultPlan(
        inject_errors=[
            InjectedError(after_frames=10, recoverable=False, message="boom", connections=99)
        ]
    )
    _, run, _ = await transcribe(srv)
    assert isinstance(run.error, APIConnectionError) and not run.error.retryable
    assert "boom" in str(run.error)


async def test_close_before_the_commit_reply_is_resumed_not_lost(baseten_server) -> None:
    srv = await qwen3_server(baseten_server)
    srv.faults = FaultPlan(close_after_commit=1)
    stt = make_stt(srv)
    text, speech = _speech("endgame_hear_me")
    stream = stt.stream()
    try:
        await _push_real_time(stream, np.concatenate([silence(0.3), speech, silence(SHORT_TAIL_S)]))
        stream.flush()
        ev = await _next_final(stream, within_s=15)
    finally:
        await stream.aclose()
        await stt.aclose()
    assert word_error_rate(text, ev.alternatives[0].text) <= 0.1
    assert stt.stats.reconnects == 1 and stt.stats.replayed_frames > 0
    assert stt.stats.commits_sent == 2  # the lost one, sent again after the replay


async def test_close_before_the_last_commit_reply_at_end_of_input(baseten_server) -> None:
    # The end of input is a commit too: a close before its reply must not end the stream
    # as a success with the last words missing (the official client's defect 3).
    srv = await qwen3_server(baseten_server)
    srv.faults = FaultPlan(close_after_commit=1)
    stt = make_stt(srv)
    pcm, onsets = plugin_speech(TWO)
    # the second phrase ends 0.2 s before the input: only the final commit can finalise it
    pcm = pcm[: pcm.size - round(0.7 * RATE)]
    run = await run_stt(stt, pcm)
    await stt.aclose()
    assert_all_words_once(run, onsets)
    assert stt.stats.reconnects == 1


async def test_one_turn_per_socket_servers_are_followed_to_a_new_socket(baseten_server) -> None:
    srv = await qwen3_server(baseten_server)
    srv.faults = FaultPlan(close_after_commit_reply=5)
    stt = make_stt(srv)
    (text_a, first), (text_b, second) = (
        _speech("endgame_hear_me"),
        _speech("audioeval_quick_brown_fox"),
    )
    stream = stt.stream()
    try:
        await _push_real_time(stream, np.concatenate([silence(0.3), first, silence(SHORT_TAIL_S)]))
        stream.flush()
        ev1 = await _next_final(stream, within_s=10)
        await _push_real_time(stream, np.concatenate([silence(0.6), second, silence(SHORT_TAIL_S)]))
        stream.flush()
        ev2 = await _next_final(stream, within_s=10)
    finally:
        await stream.aclose()
        await stt.aclose()
    assert word_error_rate(text_a, ev1.alternatives[0].text) <= 0.1
    assert word_error_rate(text_b, ev2.alternatives[0].text) <= 0.1
    assert stt.stats.reconnects >= 1 and stt.stats.stalls == 0


async def test_flush_reply_without_is_final_ends_the_stream(baseten_server) -> None:
    srv = await qwen3_server(baseten_server)
    srv.faults = FaultPlan(flush_reply_without_is_final=True)
    stt = make_stt(srv)
    pcm, onsets = plugin_speech(TWO)
    pcm = pcm[: pcm.size - round(0.7 * RATE)]  # the last words need the end commit's reply
    started = time.monotonic()
    run = await run_stt(stt, pcm, timeout_s=30)
    await stt.aclose()
    assert_all_words_once(run, onsets)
    assert stt.stats.reconnects == 0 and stt.stats.stalls == 0
    assert time.monotonic() - started < 20


async def test_stereo_is_downmixed_not_sent_at_twice_the_length(baseten_server) -> None:
    srv = await qwen3_server(baseten_server)
    stt = make_stt(srv)
    pcm, _ = plugin_speech([TEST_PHRASES[0]])
    stereo = np.repeat(pcm, 2)  # interleaved L/R
    stream = stt.stream()
    events: list[lk_stt.SpeechEvent] = []

    async def consume() -> None:
        async for ev in stream:
            events.append(ev)

    consumer = asyncio.create_task(consume())
    n = 320
    for i in range(0, pcm.size, n):
        chunk = stereo[2 * i : 2 * (i + n)]
        stream.push_frame(rtc.AudioFrame(chunk.tobytes(), RATE, 2, chunk.size // 2))
        await asyncio.sleep(0.005)
    stream.end_input()
    await asyncio.wait_for(consumer, 30)
    await stream.aclose()
    await stt.aclose()
    finals = [e.alternatives[0].text for e in events if e.type == E.FINAL_TRANSCRIPT]
    assert normalise(" ".join(finals)) == normalise(TEST_PHRASES[0])
    assert srv.stats.audio_seconds_received == pytest.approx(pcm.size / RATE, abs=0.2)


# --------------------------------------------------------------------------- v2, connect
async def test_a_v2_server_is_one_clear_non_retryable_error(
    baseten_server: BasetenServerFactory,
) -> None:
    srv = await baseten_server(api_key=KEY, protocol="v2")
    for model in ("qwen3-asr", "whisper"):
        stt = STT(model=model, api_key=KEY, model_endpoint=srv.url + ROUTE)
        pcm, _ = plugin_speech([TEST_PHRASES[0]])
        run = await run_stt(stt, pcm, timeout_s=10)
        await stt.aclose()
        assert isinstance(run.error, APIStatusError) and not run.error.retryable
        assert "v2" in run.error.message and "session.created" in run.error.message
        assert "\n" not in run.error.message
    assert srv.stats.connections == 2  # one attempt each, never retried


@pytest.mark.parametrize("model", ["qwen3-asr", "whisper"])
async def test_connect_timeouts_spend_the_budget_and_end_in_one_error(model: str) -> None:
    async with silent_tcp_server() as port:
        stt = STT(model=model, api_key=KEY, model_endpoint=f"ws://127.0.0.1:{port}{ROUTE}")
        stream = stt.stream(conn_options=APIConnectOptions(max_retry=2, timeout=0.3))
        errors: list[object] = []
        stt.on("error", errors.append)
        stream.push_frame(rtc.AudioFrame(bytes(640), RATE, 1, 320))
        started = time.monotonic()
        with pytest.raises(APIConnectionError) as info:
            async with asyncio.timeout(15):
                async for _ in stream:
                    pass
        took = time.monotonic() - started
        await stream.aclose()
        await stt.aclose()
    assert not info.value.retryable and "timed out" in info.value.message
    assert took < 10  # 3 attempts of 0.3 s plus jittered backoff, not forever


# --------------------------------------------------------------------------- scripted servers
async def test_v2_recognised_when_session_created_answers_our_first_message(
    scripted_ws_server,
) -> None:
    async def v2_replying(ws, request) -> None:  # type: ignore[no-untyped-def]
        await ws.receive()  # our handshake
        await ws.send_str('{"type":"session.created","session":{"id":"sess_1"}}')
        await ws.receive()

    srv = await scripted_ws_server(v2_replying)
    stt = STT(model="qwen3-asr", api_key=KEY, model_endpoint=srv.url)
    pcm, _ = plugin_speech([TEST_PHRASES[0]])
    run = await run_stt(stt, pcm, timeout_s=10)
    await stt.aclose()
    assert isinstance(run.error, APIStatusError) and not run.error.retryable
    assert "v2" in run.error.message and len(srv.headers) == 1


async def test_non_json_and_unknown_frames_are_skipped_not_a_reconnect(
    scripted_ws_server,
) -> None:
    # The official client raises on a non-JSON text frame and loses the turn (defect 15).
    async def noisy(ws, request) -> None:  # type: ignore[no-untyped-def]
        await ws.receive()  # handshake
        await ws.send_str("not json at all")
        await ws.send_str('{"type":"input_audio_buffer.speech_started"}')
        async for msg in ws:
            if '"input_audio_buffer.commit"' in msg.data:
                await ws.send_str(
                    '{"type":"transcription","is_final":true,"is_end_of_audio_flush":true,'
                    '"segments":[{"start_time":0.1,"end_time":0.9,"text":"hello there"}],'
                    '"language_code":"English"}'
                )

    srv = await scripted_ws_server(noisy)
    stt = STT(model="qwen3-asr", api_key=KEY, model_endpoint=srv.url)
    run = await run_stt(stt, silence(1.0), timeout_s=10)
    await stt.aclose()
    assert run.error is None, run.error
    assert run.finals == ["hello there"] and stt.stats.reconnects == 0
    assert run.of(E.FINAL_TRANSCRIPT)[0].alternatives[0].language == "en"
    assert srv.headers[0]["Authorization"] == f"Api-Key {KEY}"


async def test_flush_then_end_input_keeps_the_second_turn(baseten_server) -> None:
    # The official client ends its session at the first flush reply (defect 6).
    srv = await qwen3_server(baseten_server)
    stt = make_stt(srv)
    (text_a, first), (text_b, second) = (
        _speech("endgame_hear_me"),
        _speech("audioeval_quick_brown_fox"),
    )
    stream = stt.stream()
    finals: list[str] = []

    async def consume() -> None:
        async for ev in stream:
            if ev.type == E.FINAL_TRANSCRIPT:
                finals.append(ev.alternatives[0].text)

    consumer = asyncio.create_task(consume())
    await _push_real_time(stream, np.concatenate([silence(0.3), first, silence(SHORT_TAIL_S)]))
    stream.flush()
    await _push_real_time(stream, np.concatenate([silence(0.3), second, silence(SHORT_TAIL_S)]))
    stream.end_input()
    await asyncio.wait_for(consumer, 15)
    await stream.aclose()
    await stt.aclose()
    assert len(finals) == 2, finals
    assert word_error_rate(text_a, finals[0]) <= 0.1
    assert word_error_rate(text_b, finals[1]) <= 0.1


def test_the_official_constructor_arguments_are_accepted() -> None:
    # what a user of livekit.plugins.baseten.STT(model="qwen3-asr", ...) may pass
    stt = STT(
        model="qwen3-asr",
        api_key="k",
        model_endpoint=ENDPOINT,
        sample_rate=16000,
        buffer_size_seconds=0.1,
        language="English",
        enable_partial_transcripts=False,
        partial_transcript_interval_s=0.5,
        final_transcript_max_duration_s=30,
        show_word_timestamps=True,
        vad_threshold=0.5,
        vad_min_silence_duration_ms=400,
        vad_speech_pad_ms=50,
    )
    assert not stt.capabilities.interim_results and stt.capabilities.aligned_transcript == "word"
    whisper = STT(api_key="k", model_endpoint=ENDPOINT, buffer_size_seconds=0.032)
    assert whisper.model == "whisper"
