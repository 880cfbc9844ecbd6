"""What the real-Whisper Baseten stand-in does that a phrase-list recogniser never did.

Hearing is judged on human recordings (``localdev.human_speech``): no speech on silence,
Opus-like near-silence or noise; partials that are growing full-utterance hypotheses and
are dropped, never queued, when decoding is behind; stream-relative word times; language
fields; Whisper's punctuation and casing; the max-duration cap; the decode pool's order;
the CLI's one-line refusal of a bad model folder; the stand-in as its own process; and its
stats route's auth.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import json
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import numpy.typing as npt
import pytest
from livekit.agents import stt as lk_stt

from localdev.baseten import LocalBasetenServer
from localdev.baseten.pool import DecodePool, PoolBusy
from localdev.baseten.process import BasetenServerProcess
from localdev.baseten.server import STATS_ROUTE
from localdev.human_speech import TWO_CITIES_OPENING, HumanClip, clip
from localdev.speech import silence
from localdev.wer import normalise, word_error_rate
from plugins.baseten_stt import STT
from plugins.baseten_stt.protocol import (
    EndAudioReply,
    ServerMessage,
    StreamingParams,
    StreamingVadConfig,
    StreamingWhisperInput,
    TranscriptionResult,
    WhisperParams,
    end_audio_message,
    parse_server_message,
)
from tests.fixtures.baseten import BasetenServerFactory, to_frames
from tests.fixtures.plugin import run_stt

KEY = "whisper-key-3b9e"
PROD = "/environments/production/websocket"
REPO_ROOT = Path(__file__).resolve().parent.parent
SR = 16_000
FRAME_S = 512 / SR


@pytest.fixture
async def srv(baseten_server: BasetenServerFactory) -> LocalBasetenServer:
    return await baseten_server(api_key=KEY)


def first_message(
    *,
    partials: bool = False,
    min_silence_ms: int = 300,
    max_duration_s: int = 30,
) -> StreamingWhisperInput:
    return StreamingWhisperInput(
        whisper_params=WhisperParams(show_word_timestamps=True),
        streaming_params=StreamingParams(
            enable_partial_transcripts=partials,
            final_transcript_max_duration_s=max_duration_s,
        ),
        streaming_vad_config=StreamingVadConfig(min_silence_duration_ms=min_silence_ms),
    )


async def stream_through(
    http: aiohttp.ClientSession,
    srv: LocalBasetenServer,
    pcm: npt.NDArray[np.int16],
    first: StreamingWhisperInput,
    *,
    speed: float | None = None,
) -> list[TranscriptionResult]:
    """One stream over ``pcm``, then ``end_audio``; every result up to ``finished``.

    ``speed``: frames paced at that many times real time (``None``: as fast as the socket
    takes them). Results are read while sending, as a client does.
    """
    ws = await http.ws_connect(srv.url + PROD, headers={"Authorization": f"Api-Key {KEY}"})
    await ws.send_str(first.to_wire())
    messages: list[ServerMessage] = []

    async def read() -> None:
        while True:
            msg = await ws.receive(timeout=60)
            assert msg.type == aiohttp.WSMsgType.TEXT, msg
            message = parse_server_message(msg.data)
            messages.append(message)
            if isinstance(message, EndAudioReply) and message.finished:
                return

    reader = asyncio.create_task(read())
    loop = asyncio.get_running_loop()
    started = loop.time()
    for i, frame in enumerate(to_frames(pcm)):
        await ws.send_bytes(frame)
        if speed is None:
            await asyncio.sleep(0)
        else:
            await asyncio.sleep(max(0.0, started + (i + 1) * FRAME_S / speed - loop.time()))
    await ws.send_str(end_audio_message("end"))
    await asyncio.wait_for(reader, 120)
    await ws.close()
    return [m for m in messages if isinstance(m, TranscriptionResult)]


def finals_of(found: Sequence[TranscriptionResult]) -> list[TranscriptionResult]:
    return [r for r in found if r.is_final]


def heard_text(found: Sequence[TranscriptionResult]) -> str:
    return " ".join(r.text for r in finals_of(found) if r.text)


def with_silence(*parts: tuple[float, HumanClip], tail_s: float = 1.0) -> npt.NDArray[np.int16]:
    """``(silence before, clip)`` pairs, then ``tail_s`` of silence."""
    out: list[npt.NDArray[np.int16]] = []
    for before_s, c in parts:
        out += [silence(before_s), c.samples()]
    return np.concatenate([*out, silence(tail_s)])


# --------------------------------------------------------------------------- no speech
def _no_speech(kind: str, seconds: float = 5.0) -> npt.NDArray[np.int16]:
    rng = np.random.default_rng(20_240_601)
    n = round(seconds * SR)
    if kind == "digital_silence":
        return np.zeros(n, dtype=np.int16)
    if kind == "opus_near_silence":  # what a muted WebRTC mic decodes to
        return rng.integers(-3, 4, size=n).astype(np.int16)
    # white noise at -25 dBFS RMS
    rms = 32768 * 10 ** (-25 / 20)
    return np.clip(rng.normal(0.0, rms, size=n), -32768, 32767).astype(np.int16)


@pytest.mark.parametrize("kind", ["digital_silence", "opus_near_silence", "white_noise"])
async def test_a_caller_who_says_nothing_gets_no_transcript(
    srv: LocalBasetenServer, kind: str
) -> None:
    pcm = _no_speech(kind)
    stt = STT(api_key=KEY, model_endpoint=srv.url + PROD, enable_partial_transcripts=True)
    run = await run_stt(stt, pcm)
    await stt.aclose()
    assert run.error is None
    texts = [e.alternatives[0].text for e in run.events if e.alternatives]
    assert run.of(lk_stt.SpeechEventType.FINAL_TRANSCRIPT) == [], texts
    assert run.of(lk_stt.SpeechEventType.INTERIM_TRANSCRIPT) == [], texts
    s = srv.stats
    assert s.finals_sent == 0 and s.partials_sent == 0, s.final_texts
    # ...and the stream was really heard to the end (5 s of frames, end_audio answered).
    assert s.audio_seconds_received == pytest.approx(5.0, abs=0.05)
    assert s.finished_sent == 1


# --------------------------------------------------------------------------- partials
def _utterances(
    found: Sequence[TranscriptionResult],
) -> list[tuple[list[TranscriptionResult], TranscriptionResult]]:
    """(partials, final) per utterance, in order."""
    out: list[tuple[list[TranscriptionResult], TranscriptionResult]] = []
    partials: list[TranscriptionResult] = []
    for r in found:
        if r.is_final:
            out.append((partials, r))
            partials = []
        elif r.text:
            partials.append(r)
    return out


async def test_partials_are_growing_full_hypotheses_of_the_open_utterance(
    http: aiohttp.ClientSession, srv: LocalBasetenServer
) -> None:
    passage = TWO_CITIES_OPENING
    pcm = with_silence((0.5, passage))
    found = await stream_through(http, srv, pcm, first_message(partials=True), speed=2.0)
    utterances = _utterances(found)
    assert srv.stats.partials_sent >= 5, srv.stats
    assert word_error_rate(passage.text, heard_text(found)) <= 0.15, heard_text(found)
    grown = 0
    for partials, final in utterances:
        if not partials or not final.segments:
            continue
        final_start = final.segments[0].start_time
        lengths = [p.audio_length_sec or 0.0 for p in partials]
        # Each partial is of a longer buffer than the one before, all shorter than the final.
        assert lengths == sorted(set(lengths)), lengths
        assert lengths[-1] <= (final.audio_length_sec or 0.0)
        for p in partials:
            # Full replacement: every partial covers the utterance from its start (not the
            # words since the previous partial), carrying the previous final's number.
            assert abs(p.segments[0].start_time - final_start) < 0.5, (p, final)
            assert final.transcription_num is not None
            assert p.transcription_num == final.transcription_num - 1
        if len(partials) >= 2:
            words = [len(normalise(p.text)) for p in partials]
            assert words[-1] > words[0], [p.text for p in partials]
            grown += 1
    assert grown >= 2, [([p.text for p in ps], f.text) for ps, f in utterances]


class _SlowDecodes:
    """The real Whisper engine with every decode 1 s longer: a server whose *throughput*
    is behind (``FaultPlan.inference_delay_s`` is pipelined latency, which drops nothing)."""

    def __init__(self, engine: Any) -> None:
        self._engine = engine

    def warm_up(self) -> None:
        self._engine.warm_up()

    def transcribe(self, pcm: Any, *, time_offset: float, params: Any, final: bool = True) -> Any:
        time.sleep(1.0)
        return self._engine.transcribe(pcm, time_offset=time_offset, params=params, final=final)


async def test_partials_are_dropped_when_decoding_is_behind_and_no_final_is_lost(
    http: aiohttp.ClientSession, baseten_server: BasetenServerFactory, whisper_engine: Any
) -> None:
    # Three utterances of 3.7-4.4 s: a partial is due every 0.5 s of speech in each.
    said = [clip(n) for n in ("two_cities_best_of_times", "two_cities_age_of_wisdom")]
    said.append(clip("endgame_ditch"))
    pcm = with_silence(*((1.0, c) for c in said))
    reference = " ".join(c.text for c in said)
    first = first_message(partials=True)
    # What a server that keeps up finalises: the VAD alone decides the cuts, so the same
    # audio gives the same finals whatever the pace or the decode time.
    fast = await baseten_server(api_key=KEY)
    expected = finals_of(await stream_through(http, fast, pcm, first))
    assert word_error_rate(reference, heard_text(expected)) <= 0.10, heard_text(expected)
    slow = await baseten_server(api_key=KEY, engine=_SlowDecodes(whisper_engine))
    found = await stream_through(http, slow, pcm, first, speed=2.0)
    s = slow.stats
    # Each decode takes > 1 s while a partial is due every 0.25 s (2x real time): most are
    # dropped, none queued (a queued one would be sent late, before its final).
    assert s.partials_dropped > s.partials_sent > 0, s
    # Every final still arrives: the same ones, in order, before "finished".
    assert [normalise(f.text) for f in finals_of(found)] == [normalise(f.text) for f in expected]
    assert [f.transcription_num for f in finals_of(found)] == list(range(1, len(expected) + 1))
    assert s.finals_sent == len(expected) >= 3


# --------------------------------------------------------------------------- timestamps
async def test_word_times_are_stream_relative_and_ordered(
    http: aiohttp.ClientSession, srv: LocalBasetenServer
) -> None:
    lead_s, gap_s = 3.0, 1.5
    a, b = clip("endgame_ditch"), clip("two_cities_best_of_times")
    pcm = with_silence((lead_s, a), (gap_s, b))
    finals = finals_of(await stream_through(http, srv, pcm, first_message()))
    assert word_error_rate(f"{a.text} {b.text}", heard_text(finals)) <= 0.10, heard_text(finals)
    words = [w for f in finals for s in f.segments for w in s.word_timestamps]
    assert normalise(" ".join(w.word for w in words)) == normalise(heard_text(finals))
    starts = [w.start_time for w in words]
    assert starts == sorted(starts)
    assert all(w.start_time <= w.end_time for w in words)
    assert all(x.end_time <= y.start_time + 0.05 for x, y in itertools.pairwise(words))
    # Each clip's first word where it was said in the stream (clips keep a short lead-in;
    # Whisper may put a first word at the decoded audio's start, ~0.35 s before the VAD's).
    assert abs(words[0].start_time - lead_s) < 0.5, words[0]
    b_onset = lead_s + len(a.samples()) / SR + gap_s
    first_b = next(w for w in words if w.start_time > b_onset - 1.0)
    assert normalise(first_b.word) == normalise(b.text)[:1]
    assert abs(first_b.start_time - b_onset) < 0.5, first_b
    assert words[-1].end_time <= len(pcm) / SR


# --------------------------------------------------------------------------- result fields
async def test_language_fields_are_set(
    http: aiohttp.ClientSession, srv: LocalBasetenServer
) -> None:
    pcm = with_silence((0.5, clip("endgame_ditch")))
    found = await stream_through(http, srv, pcm, first_message(partials=True), speed=2.0)
    with_text = [r for r in found if r.segments]
    assert finals_of(with_text) and [r for r in with_text if not r.is_final]
    for r in with_text:
        assert r.language_code == "en"
        assert r.language_prob is not None and 0.0 < r.language_prob <= 1.0
        for s in r.segments:
            assert s.language_code == "en" and s.language_prob == r.language_prob


async def test_whisper_punctuation_and_casing_reach_the_final_text(
    srv: LocalBasetenServer,
) -> None:
    stt = STT(api_key=KEY, model_endpoint=srv.url + PROD)
    question, statement = clip("endgame_ditch"), clip("two_cities_best_of_times")
    pcm = with_silence((0.5, question), (1.5, statement))
    run = await run_stt(stt, pcm)
    await stt.aclose()
    assert run.error is None
    finals = run.of(lk_stt.SpeechEventType.FINAL_TRANSCRIPT)
    texts = [e.alternatives[0].text for e in finals]
    assert len(texts) == 2, texts
    # "Do you remember the day I went and fetched you from that ditch?"
    assert texts[0].startswith("Do ") and texts[0].endswith("?"), texts
    assert " I " in texts[0]
    # "It was the best of times, it was the worst of times."
    assert texts[1].startswith("It ") and "," in texts[1] and texts[1].endswith("."), texts
    assert all(e.alternatives[0].language == "en" for e in finals)


# --------------------------------------------------------------------------- max duration
@pytest.mark.parametrize(
    ("requested_s", "cap_s"),
    [(5, 5), (45, 30)],
    ids=["5s", "45s-clamped-to-30s"],
)
async def test_continuous_speech_is_cut_into_finals_no_longer_than_the_cap(
    http: aiohttp.ClientSession, srv: LocalBasetenServer, requested_s: int, cap_s: int
) -> None:
    # Human speech with only short pauses (commas, < 2 s), so the VAD never ends it: only
    # the cap makes finals. For 45 s (clamped to Whisper's 30 s) the passage runs ~39 s.
    clips = [TWO_CITIES_OPENING] + ([clip("beckett_fail_better")] if cap_s == 30 else [])
    reference = " ".join(c.text for c in clips)
    pcm = np.concatenate([silence(0.5), *(c.samples() for c in clips), silence(1.0)])
    speech_s = sum(len(c.samples()) for c in clips) / SR
    assert speech_s > cap_s + 5
    first = first_message(min_silence_ms=2000, max_duration_s=requested_s)
    finals = finals_of(await stream_through(http, srv, pcm, first))
    lengths = [f.audio_length_sec or 0.0 for f in finals]
    assert all(0.0 < x <= cap_s for x in lengths), lengths
    at_cap = [x for x in lengths if x > cap_s - 0.1]
    assert len(at_cap) >= int(speech_s // cap_s), lengths
    # Each cut final is transcribed on its own part of the stream timeline...
    offset = 0.0
    for f, length in zip(finals, lengths, strict=True):
        for s in f.segments:
            assert offset - 0.1 <= s.start_time <= s.end_time <= offset + length + 0.1, (f, offset)
        offset += length
    # ...and together they hear the passage (a word cut in two at a cap costs a word or two).
    heard = heard_text(finals)
    cut = [f.text for f, x in zip(finals, lengths, strict=True) if x > cap_s - 0.1]
    assert all(len(normalise(t)) >= 5 for t in cut), cut  # ~2.5 words/s: 5 s holds > 10
    assert word_error_rate(reference, heard) <= 0.20, heard


# --------------------------------------------------------------------------- decode pool
class _Gate:
    """A blocking function for pool threads, released by the test."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.lock = threading.Lock()
        self.running = 0
        self.most = 0

    def __call__(self) -> None:
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
        try:
            assert self.release.wait(timeout=30), "gate never released"
        finally:
            with self.lock:
                self.running -= 1


async def _until(predicate: Callable[[], bool], within_s: float = 10.0) -> None:
    """Poll ``predicate`` (pool threads change what it reads, so no event to wait on)."""
    async with asyncio.timeout(within_s):
        while not predicate():  # noqa: ASYNC110
            await asyncio.sleep(0.005)


async def _until_queued(pool: DecodePool, n: int) -> None:
    await _until(lambda: pool.queued == n)


async def test_pool_finals_wait_in_order_and_partials_never_wait() -> None:
    pool = DecodePool(workers=1)
    order: list[str] = []
    try:
        gate = _Gate()
        holder = asyncio.create_task(pool.run(gate, final=True))
        await _until(lambda: gate.running == 1)
        finals: list[asyncio.Task[None]] = []
        for name in ("f1", "f2", "f3"):
            finals.append(
                asyncio.create_task(pool.run(functools.partial(order.append, name), final=True))
            )
            await _until_queued(pool, len(finals))  # queued in this order
        assert pool.busy == 1
        # A partial due now, with the thread busy and finals waiting, is refused at once
        # (the caller drops it): it neither runs nor joins the queue ahead of them.
        assert not pool.partial_would_run()
        with pytest.raises(PoolBusy):
            await pool.run(lambda: order.append("partial"), final=False)
        assert pool.queued == 3
        gate.release.set()
        await asyncio.gather(holder, *finals)
        assert order == ["f1", "f2", "f3"]
        assert pool.busy == 0 and pool.queued == 0
        # Idle again: a partial runs.
        assert pool.partial_would_run()
        assert await pool.run(lambda: "preview", final=False) == "preview"
    finally:
        pool.shutdown()


async def test_pool_keeps_a_thread_for_finals() -> None:
    pool = DecodePool(workers=2)
    try:
        gate = _Gate()
        partial = asyncio.create_task(pool.run(gate, final=False))
        await _until(lambda: gate.running == 1)
        # One preview at a time on two threads: the second thread is left for finals...
        assert pool.partial_limit == 1 and not pool.partial_would_run()
        with pytest.raises(PoolBusy):
            await pool.run(lambda: None, final=False)
        # ...and a final takes it at once, while the preview still runs.
        assert await asyncio.wait_for(pool.run(lambda: "final", final=True), 10) == "final"
        assert gate.running == 1 and pool.queued == 0
        gate.release.set()
        await partial
        assert pool.busy == 0
    finally:
        pool.shutdown()


async def test_pool_never_runs_more_than_its_workers_at_once() -> None:
    pool = DecodePool(workers=2)
    try:
        gate = _Gate()
        tasks = [asyncio.create_task(pool.run(gate, final=True)) for _ in range(6)]
        await _until(lambda: gate.running == 2 and pool.queued == 4)
        await asyncio.sleep(0.2)  # give a wrongly started third decode time to show up
        assert gate.running == 2 and pool.busy == 2
        gate.release.set()
        await asyncio.gather(*tasks)
        assert gate.most == 2 and pool.busy == 0 and pool.queued == 0
    finally:
        pool.shutdown()


async def test_cancelled_waiters_do_not_leak_a_slot() -> None:
    pool = DecodePool(workers=1)
    try:
        gate = _Gate()
        holder = asyncio.create_task(pool.run(gate, final=True))
        await _until(lambda: gate.running == 1)
        # A final cancelled while it waits (its stream ended)...
        waiter = asyncio.create_task(pool.run(lambda: "never", final=True))
        await _until(lambda: pool.queued == 1)
        waiter.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await waiter
        assert waiter.cancelled() and pool.queued == 0
        gate.release.set()
        await holder
        assert pool.busy == 0 and pool.partial_would_run()
        # ...and one cancelled in the instant the thread was handed to it: a release passes
        # the thread straight to the next waiting final, which must give it back if its
        # task is cancelled before it runs (white box: only the hand-over itself reaches
        # that race).
        await pool._acquire_for_final()  # hold the only thread
        late = asyncio.create_task(pool._acquire_for_final())
        await _until(lambda: pool.queued == 1)
        pool._release()  # the thread now belongs to ``late``...
        late.cancel()  # ...whose task has not run yet
        with contextlib.suppress(asyncio.CancelledError):
            await late
        assert late.cancelled()
        assert pool.busy == 0 and pool.queued == 0
        # The thread is usable: a final and a partial both still run.
        assert await asyncio.wait_for(pool.run(lambda: 42, final=True), 10) == 42
        assert await asyncio.wait_for(pool.run(lambda: 43, final=False), 10) == 43
        assert pool.busy == 0
    finally:
        pool.shutdown()


# --------------------------------------------------------------------------- CLI model folder
def _junk_model(folder: Path) -> Path:
    folder.mkdir()
    (folder / "model.bin").write_bytes(b"\x00not a CTranslate2 model\xff" * 64)
    (folder / "config.json").write_text(json.dumps({"junk": True}))
    (folder / "tokenizer.json").write_text("{}")
    return folder


@pytest.mark.parametrize("case", ["missing", "junk"])
def test_cli_refuses_a_bad_model_folder_in_one_line(tmp_path: Path, case: str) -> None:
    folder = tmp_path / "nonexistent" if case == "missing" else _junk_model(tmp_path / "junk")
    proc = subprocess.run(
        [sys.executable, "-m", "localdev.baseten", "--port", "0", "--model-dir", str(folder)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("python -m localdev.baseten: Whisper model"), lines
    assert str(folder) in lines[0]
    assert "Traceback" not in proc.stderr and "listening on" not in proc.stderr


# --------------------------------------------------------------------------- own process
async def test_server_process_transcribes_reports_stats_and_stops() -> None:
    key = "proc-" + uuid.uuid4().hex  # a fresh key, so finding it in the log means a leak
    speech = clip("audioeval_quick_brown_fox")
    pcm = with_silence((0.5, speech))
    proc = BasetenServerProcess(api_key=key)
    async with proc:
        stt = STT(api_key=key, model_endpoint=proc.url + PROD)
        run = await run_stt(stt, pcm)
        await stt.aclose()
        assert run.error is None
        assert word_error_rate(speech.text, " ".join(run.finals)) <= 0.10, run.finals
        stats = await proc.wait_for(lambda s: s["finished_sent"] == 1)
        assert stats["finals_sent"] == len(run.finals) >= 1
        assert word_error_rate(speech.text, " ".join(stats["final_texts"])) <= 0.10
        assert [d for d in stats["decodes"] if d["is_final"]]
        log = proc.log_text
        port = proc.port
    assert "stream" in log and key not in log
    # Stopped: nothing listens on its port any more.
    with pytest.raises(OSError):
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.close()


# --------------------------------------------------------------------------- stats route
async def test_stats_route_needs_the_api_key(
    http: aiohttp.ClientSession, srv: LocalBasetenServer, baseten_server: BasetenServerFactory
) -> None:
    url = srv.url.replace("ws://", "http://") + STATS_ROUTE
    for headers in ({}, {"Authorization": "Api-Key wrong"}, {"Authorization": KEY}):
        async with http.get(url, headers=headers) as resp:
            assert resp.status == 401, headers
            body = await resp.json()
            assert set(body) == {"error"} and KEY not in body["error"]
    for scheme in ("Api-Key", "Bearer"):
        async with http.get(url, headers={"Authorization": f"{scheme} {KEY}"}) as resp:
            assert resp.status == 200
            data = await resp.json()
            assert data["finals_sent"] == 0 and data["decodes"] == []
    # Without a key configured, as the websocket routes, it is open.
    open_srv = await baseten_server()
    async with http.get(open_srv.url.replace("ws://", "http://") + STATS_ROUTE) as resp:
        assert resp.status == 200
