"""The local server's Qwen3-ASR streaming dialect (``protocol="qwen3"``) and v2 stub.

Raw aiohttp websocket clients; every message is built and read with
``plugins.baseten_stt.protocol`` (the raw JSON is also looked at where a key's absence is
the point). Recognition is real Whisper (tiny.en) over Silero VAD: human recordings
(``localdev.human_speech``) judge hearing, espeak-ng ``TEST_PHRASES`` drive mechanics.
Protocol: ``shared/docs/baseten-qwen3-protocol.md`` §2.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import numpy as np
import numpy.typing as npt
import pytest

from localdev.baseten import FaultPlan, InjectedError, LocalBasetenServer
from localdev.baseten.__main__ import _parser
from localdev.baseten.faults import ErrorShape
from localdev.baseten.process import BasetenServerProcess, _fault_flags
from localdev.human_speech import clip
from localdev.speech import silence, synthesize
from localdev.wer import normalise, word_error_rate
from plugins.baseten_stt.protocol import (
    CLOSE_INTERNAL_ERROR,
    CLOSE_NORMAL,
    CLOSE_UNSUPPORTED,
    COMMIT_MESSAGE,
    QWEN3_CHUNK_SAMPLES,
    ErrorFrame,
    ErrorType,
    Qwen3Handshake,
    Qwen3StreamingParams,
    Qwen3WhisperParams,
    SessionCreated,
    TranscriptionResult,
    append_message,
    end_audio_message,
    health_check_message,
    parse_server_message,
)
from tests.fixtures.baseten import TEST_PHRASES, BasetenServerFactory, speech_with_silence

KEY = "qwen3-key-7c1d"
PROD = "/environments/production/websocket"
SR = 16_000
WINDOW_S = 512 / SR
#: What the official client sends (doc §2.1), as the protocol models build it.
OFFICIAL_HANDSHAKE = Qwen3Handshake.model_validate(
    {
        "whisper_params": {"audio_language": "auto", "show_word_timestamps": False},
        "streaming_params": {
            "enable_partial_transcripts": True,
            "partial_transcript_interval_s": 0.5,
            "final_transcript_max_duration_s": 30,
        },
        "streaming_vad_config": {
            "threshold": 0.5,
            "min_silence_duration_ms": 500,
            "speech_pad_ms": 100,
        },
    }
)


@pytest.fixture
async def srv(baseten_server: BasetenServerFactory) -> LocalBasetenServer:
    return await baseten_server(api_key=KEY, protocol="qwen3")


class Conn:
    """A raw Qwen3 client: a reader task keeps every JSON frame the server sends."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.frames: list[dict[str, Any]] = []
        self.closed = asyncio.Event()
        self._changed = asyncio.Event()
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        while True:
            msg = await self.ws.receive()
            if msg.type == aiohttp.WSMsgType.TEXT:
                self.frames.append(json.loads(msg.data))
            elif msg.type in (
                aiohttp.WSMsgType.CLOSE,
                aiohttp.WSMsgType.CLOSING,
                aiohttp.WSMsgType.CLOSED,
                aiohttp.WSMsgType.ERROR,
            ):
                self.closed.set()
                self._changed.set()
                return
            self._changed.set()

    # ------------------------------------------------------------------ sending
    async def handshake(self, handshake: Qwen3Handshake | dict[str, Any]) -> None:
        raw = (
            handshake.to_wire() if isinstance(handshake, Qwen3Handshake) else json.dumps(handshake)
        )
        await self.ws.send_str(raw)

    async def append(
        self,
        pcm: npt.NDArray[np.int16],
        *,
        chunk: int = QWEN3_CHUNK_SAMPLES,
        speed: float | None = None,
    ) -> None:
        """``pcm`` in appends of ``chunk`` samples, paced at ``speed`` x real time
        (``None``: as fast as the socket takes them); stops once the socket is closed."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        for i in range(0, len(pcm), chunk):
            if self.closed.is_set():
                return
            try:
                await self.ws.send_str(append_message(pcm[i : i + chunk].tobytes()))
            except ConnectionError:
                return  # the server closed or dropped it meanwhile
            if speed is None:
                await asyncio.sleep(0)
            else:
                due = started + (i + chunk) / SR / speed
                await asyncio.sleep(max(0.0, due - loop.time()))

    async def commit(self) -> None:
        await self.ws.send_str(COMMIT_MESSAGE)

    # ------------------------------------------------------------------ reading
    async def wait_for(self, done: Callable[[Conn], bool], *, within_s: float = 10.0) -> None:
        async with asyncio.timeout(within_s):
            while True:
                self._changed.clear()
                if done(self):
                    return
                if self.closed.is_set():
                    raise AssertionError(f"closed ({self.ws.close_code}) first: {self.frames}")
                await self._changed.wait()

    async def wait_closed(self, within_s: float = 10.0) -> int | None:
        async with asyncio.timeout(within_s):
            await self.closed.wait()
        return self.ws.close_code

    @property
    def results(self) -> list[TranscriptionResult]:
        return [
            TranscriptionResult.model_validate(f)
            for f in self.frames
            if f["type"] == "transcription"
        ]

    @property
    def finals(self) -> list[TranscriptionResult]:
        return [r for r in self.results if r.is_final]

    @property
    def flushes(self) -> list[TranscriptionResult]:
        return [r for r in self.results if r.is_end_of_audio_flush]

    @property
    def raw_flushes(self) -> list[dict[str, Any]]:
        return [f for f in self.frames if f.get("is_end_of_audio_flush")]

    @property
    def errors(self) -> list[dict[str, Any]]:
        return [f for f in self.frames if f["type"] == "error"]

    async def aclose(self) -> None:
        with contextlib.suppress(Exception):
            await self.ws.close()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._reader


@pytest.fixture
async def connect(http: aiohttp.ClientSession) -> Any:
    conns: list[Conn] = []

    async def open_conn(srv: LocalBasetenServer, *, path: str = PROD) -> Conn:
        ws = await http.ws_connect(
            srv.url + path,
            headers={"Authorization": f"Api-Key {KEY}"},
            # A stalled server never answers the close: do not wait 10 s for it.
            timeout=aiohttp.ClientWSTimeout(ws_close=1.0),
        )
        conn = Conn(ws)
        conns.append(conn)
        return conn

    yield open_conn
    for conn in conns:
        await conn.aclose()


def phrase(i: int, *, lead_s: float = 0.3, tail_s: float = 0.1) -> npt.NDArray[np.int16]:
    return speech_with_silence(TEST_PHRASES[i], lead_s=lead_s, tail_s=tail_s)


# --------------------------------------------------------------------------- handshake
async def test_no_handshake_first_append_is_audio_with_defaults(
    srv: LocalBasetenServer, connect: Any
) -> None:
    """Doc §2.1: the handshake is optional; a first ``append`` is audio, with the
    deployment defaults (partials on, 500 ms silence ends a turn, no word timestamps)."""
    conn = await connect(srv)
    await conn.append(phrase(0, tail_s=1.0))
    await conn.wait_for(lambda c: len(c.finals) == 1)
    final = conn.finals[0]
    assert normalise(final.text) == normalise(TEST_PHRASES[0])
    assert final.language_code == "English"
    assert not final.is_end_of_audio_flush  # a VAD final, not a commit's reply
    assert all(not s.word_timestamps for s in final.segments)
    assert srv.stats.handshakes_received == 0 and srv.stats.last_handshake is None
    assert srv.stats.streams_started == 1 and srv.stats.error_frames_sent == 0


async def test_partial_handshake_with_unknown_keys_is_accepted(
    srv: LocalBasetenServer, connect: Any
) -> None:
    """Doc §2.1: unknown keys ignored (top level and in sections), missing sections
    defaulted; ``show_word_timestamps`` honoured."""
    conn = await connect(srv)
    await conn.handshake(
        {
            "whisper_params": {"show_word_timestamps": True, "keyterms": ["door"]},
            "streaming_params": {"enable_partial_transcripts": False},
            "client": "a-future-sdk",
        }
    )
    await conn.append(phrase(0, tail_s=1.0))
    await conn.wait_for(lambda c: len(c.finals) == 1)
    words = [w.word for s in conn.finals[0].segments for w in s.word_timestamps]
    assert normalise(" ".join(words)) == normalise(TEST_PHRASES[0])
    assert all(w.prob is not None for s in conn.finals[0].segments for w in s.word_timestamps)
    assert not [r for r in conn.results if not r.is_final]  # partials off
    hs = srv.stats.last_handshake
    assert hs is not None and srv.stats.handshakes_received == 1
    assert hs.streaming_vad_config is None and hs.vad.min_silence_duration_ms == 500
    assert hs.whisper.audio_language == "auto"


async def test_handshake_with_invalid_values_closes_1011(
    srv: LocalBasetenServer, connect: Any
) -> None:
    """A handshake whose values do not validate is refused like Whisper's bad first
    message (close 1011), rather than silently running with other settings."""
    conn = await connect(srv)
    await conn.handshake({"streaming_vad_config": {"threshold": "high"}})
    assert await conn.wait_closed() == CLOSE_INTERNAL_ERROR
    assert srv.stats.bad_first_messages == 1 and srv.stats.streams_started == 0


async def test_first_frame_commit_means_no_handshake(srv: LocalBasetenServer, connect: Any) -> None:
    """Doc §2.2: a commit on an empty buffer still gets an (empty) answer, even as the
    very first frame; the stream goes on."""
    conn = await connect(srv)
    await conn.commit()
    await conn.wait_for(lambda c: len(c.flushes) == 1)
    reply = conn.flushes[0]
    assert reply.segments == [] and reply.is_final and reply.transcription_num == 1
    # Silence only, then a commit: still empty (never decoded: Whisper would invent).
    await conn.append(silence(1.0))
    await conn.commit()
    await conn.wait_for(lambda c: len(c.flushes) == 2)
    assert conn.flushes[1].segments == [] and conn.flushes[1].is_final
    assert srv.stats.commits_received == 2 and srv.stats.flush_replies_sent == 2
    assert srv.stats.empty_finals_sent == 2 and srv.stats.handshakes_received == 0


# --------------------------------------------------------------------------- hearing
async def test_human_clip_partials_then_a_vad_final_with_the_words(
    srv: LocalBasetenServer, connect: Any
) -> None:
    """Replace-style partials while speaking, then one VAD final after 500 ms of silence,
    in the official client's handshake; ``language_code`` is the Qwen3 *name*."""
    speech = clip("two_cities_best_of_times")
    conn = await connect(srv)
    await conn.handshake(OFFICIAL_HANDSHAKE)
    await conn.append(np.concatenate([silence(0.3), speech.samples(), silence(1.0)]), speed=2.0)
    await conn.wait_for(lambda c: len(c.finals) == 1)
    final = conn.finals[0]
    assert word_error_rate(speech.text, final.text) <= 0.10, final.text
    assert final.language_code == "English" and not final.is_end_of_audio_flush
    partials = [r for r in conn.results if not r.is_final]
    assert partials, conn.frames
    assert all(r.language_code == "English" for r in partials)
    # Growing hypotheses of the open utterance (a partial may end mid-word: "It wasn't...").
    first, last = normalise(partials[0].text), normalise(partials[-1].text)
    assert first[:1] == ["it"] and len(last) > len(first), (first, last)
    # The Qwen3 shape: no Whisper-only fields.
    raw_final = next(f for f in conn.frames if f.get("is_final"))
    assert "audio_length_sec" not in raw_final and "log_prob" not in raw_final["segments"][0]
    sent_s = len(speech.samples()) / SR + 1.3
    assert srv.stats.audio_seconds_received == pytest.approx(sent_s, abs=0.1)


async def test_commit_mid_stream_answers_at_once_and_the_socket_takes_another_turn(
    srv: LocalBasetenServer, connect: Any
) -> None:
    """Doc §2.2: a commit transcribes the buffer now (no VAD silence needed) and answers
    with ``is_end_of_audio_flush`` + ``is_final``; the socket stays open, the next audio is
    a new utterance, and times are cumulative over the socket."""
    conn = await connect(srv)
    await conn.handshake(OFFICIAL_HANDSHAKE)
    first = phrase(1, tail_s=0.05)
    await conn.append(first)
    await srv.wait_for(lambda s: s.frames_received >= len(first) // 512)
    committed = time.monotonic()
    await conn.commit()
    await conn.wait_for(lambda c: len(c.flushes) == 1)
    took = time.monotonic() - committed
    reply = conn.flushes[0]
    assert reply.is_final and normalise(reply.text) == normalise(TEST_PHRASES[1])
    assert took < 2.0, took  # a decode, not 500 ms of silence + a decode behind partials
    assert len(conn.finals) == 1  # no VAD final of its own
    # Second turn on the same socket, ended by server VAD this time.
    second = phrase(2, lead_s=0.5, tail_s=1.0)
    await conn.append(second)
    await conn.wait_for(lambda c: len(c.finals) == 2)
    final = conn.finals[1]
    assert normalise(final.text) == normalise(TEST_PHRASES[2])
    assert not final.is_end_of_audio_flush
    assert final.transcription_num == reply.transcription_num + 1 == 2
    # Cumulative times: the second utterance starts after all of the first turn's audio.
    assert final.segments[0].start_time >= len(first) / SR + 0.3
    assert final.segments[-1].end_time <= (len(first) + len(second)) / SR
    assert conn.ws.closed is False and srv.stats.active_connections == 1


async def test_commit_takes_the_tail_shorter_than_a_window(
    srv: LocalBasetenServer, connect: Any
) -> None:
    """Appends of odd sizes are cut into 512-sample windows across appends; a commit
    decodes the last < 512 samples too, and later times stay exact."""
    conn = await connect(srv)
    pcm = phrase(4, tail_s=0.0)
    await conn.append(pcm, chunk=700)
    await conn.commit()
    await conn.wait_for(lambda c: len(c.flushes) == 1)
    assert normalise(conn.flushes[0].text) == normalise(TEST_PHRASES[4])
    assert srv.stats.frames_received == len(pcm) // 512
    assert srv.stats.audio_seconds_received == pytest.approx(len(pcm) / SR)


async def test_language_name_forced_and_word_timestamps(
    srv: LocalBasetenServer, connect: Any
) -> None:
    """``audio_language`` is a Qwen3 name; the engine gets the code; results carry the
    name; word timestamps only when asked for, and socket-relative."""
    conn = await connect(srv)
    await conn.handshake(
        Qwen3Handshake(
            whisper_params=Qwen3WhisperParams(audio_language="English", show_word_timestamps=True),
            streaming_params=Qwen3StreamingParams(enable_partial_transcripts=False),
        )
    )
    await conn.append(phrase(3, lead_s=0.8))
    await conn.commit()
    await conn.wait_for(lambda c: len(c.flushes) == 1)
    reply = conn.flushes[0]
    assert reply.language_code == "English"
    words = [w for s in reply.segments for w in s.word_timestamps]
    assert normalise(" ".join(w.word for w in words)) == normalise(TEST_PHRASES[3])
    assert words[0].start_time >= 0.5  # after the 0.8 s lead-in, less the VAD pad
    assert srv.stats.last_handshake is not None
    assert srv.stats.last_handshake.whisper.audio_language == "English"


# --------------------------------------------------------------------------- bad input
async def test_binary_frame_is_rejected_with_an_error_then_close_1003(
    srv: LocalBasetenServer, connect: Any
) -> None:
    """Doc §1: binary frames are rejected. An error frame, then 1003 ("cannot accept
    this type of data", RFC 6455 §7.4.1)."""
    conn = await connect(srv)
    await conn.handshake(OFFICIAL_HANDSHAKE)
    await conn.ws.send_bytes(np.zeros(512, dtype=np.int16).tobytes())
    assert await conn.wait_closed() == CLOSE_UNSUPPORTED
    (error,) = conn.errors
    frame = ErrorFrame.model_validate(error)
    assert set(error) == {"type", "message", "recoverable"}
    assert frame.is_fatal and "input_audio_buffer.append" in frame.description
    assert srv.stats.binary_frames_rejected == 1
    assert srv.stats.close_codes_sent == [CLOSE_UNSUPPORTED]


@pytest.mark.parametrize(
    ("frame", "says"),
    [
        ('{"type":"input_audio_buffer.append","audio":"not base64!"}', "base64"),
        ('{"type":"input_audio_buffer.append","audio":"AA=="}', "PCM16"),
        ('{"type":"input_audio_buffer.append"}', "append"),
        ("this is not json", "not JSON"),
        ("[1, 2]", "JSON object"),
        (end_audio_message("t"), "end_audio"),
        (health_check_message("t", 1.0, get_partial_interval=True), "health_check"),
        ('{"whisper_params": {}}', "handshake"),
    ],
)
async def test_bad_text_frames_get_a_recoverable_error_and_the_stream_goes_on(
    srv: LocalBasetenServer, connect: Any, frame: str, says: str
) -> None:
    """Invalid base64, odd PCM, not JSON, an unknown ``type`` (``end_audio``,
    ``health_check``), a second handshake: ``{"type":"error","message":...}``, not fatal."""
    conn = await connect(srv)
    await conn.handshake(OFFICIAL_HANDSHAKE)
    await conn.ws.send_str(frame)
    await conn.wait_for(lambda c: len(c.errors) == 1)
    error = ErrorFrame.model_validate(conn.errors[0])
    assert says in (error.message or ""), error
    assert error.recoverable is True and not error.is_fatal
    await conn.commit()  # still serving
    await conn.wait_for(lambda c: len(c.flushes) == 1)
    assert srv.stats.stream_errors_sent == 1 and srv.stats.close_codes_sent == []


# --------------------------------------------------------------------------- faults
async def test_close_after_commit_loses_the_reply(srv: LocalBasetenServer, connect: Any) -> None:
    """``close_after_commit``: 1000 on the commit, no flush reply (a lost last final);
    only on the first connection."""
    srv.faults = FaultPlan(close_after_commit=1)
    conn = await connect(srv)
    await conn.append(phrase(0))
    await conn.commit()
    assert await conn.wait_closed() == CLOSE_NORMAL
    assert conn.results == [] or all(not r.is_final for r in conn.results)
    assert srv.stats.commits_received == 1 and srv.stats.flush_replies_sent == 0
    again = await connect(srv)
    await again.commit()
    await again.wait_for(lambda c: len(c.flushes) == 1)


async def test_close_after_commit_reply_serves_one_turn_per_socket(
    srv: LocalBasetenServer, connect: Any
) -> None:
    """``close_after_commit_reply``: the flush reply arrives, then a close 1000."""
    srv.faults = FaultPlan(close_after_commit_reply=1)
    conn = await connect(srv)
    await conn.append(phrase(0))
    await conn.commit()
    assert await conn.wait_closed() == CLOSE_NORMAL
    (reply,) = conn.flushes
    assert reply.is_final and normalise(reply.text) == normalise(TEST_PHRASES[0])
    assert srv.stats.close_codes_sent == [CLOSE_NORMAL]


async def test_flush_reply_without_is_final(srv: LocalBasetenServer, connect: Any) -> None:
    """``flush_reply_without_is_final``: the commit's reply has no ``is_final`` key
    (VAD finals and partials keep theirs)."""
    srv.faults = FaultPlan(flush_reply_without_is_final=True)
    conn = await connect(srv)
    await conn.append(phrase(0, tail_s=1.0))
    await conn.wait_for(lambda c: len(c.finals) == 1)
    await conn.append(phrase(1))
    await conn.commit()
    await conn.wait_for(lambda c: len(c.raw_flushes) == 1)
    (raw,) = conn.raw_flushes
    assert "is_final" not in raw
    assert normalise(" ".join(s["text"] for s in raw["segments"])) == normalise(TEST_PHRASES[1])
    vad_final = next(f for f in conn.frames if f.get("is_final"))
    assert vad_final["is_final"] is True


@pytest.mark.parametrize(
    ("shape", "keys"),
    [
        ("message", {"type", "message", "recoverable"}),
        ("error", {"type", "error"}),
        ("body", {"type", "trace_id", "timestamp", "body"}),
    ],
)
async def test_injected_errors_in_each_shape(
    srv: LocalBasetenServer, connect: Any, shape: ErrorShape, keys: set[str]
) -> None:
    """``error_shape`` picks the error frame's shape; a recoverable injected error leaves
    the stream running, a fatal one is followed by a close 1000 (as in Whisper)."""
    srv.faults = FaultPlan(
        error_shape=shape,
        inject_errors=[
            InjectedError(after_frames=3, message="injected recoverable"),
            InjectedError(
                after_frames=6,
                error_type=ErrorType.AUDIO_PROCESSING_ERROR,
                recoverable=False,
                message="injected fatal",
            ),
        ],
    )
    conn = await connect(srv)
    await conn.append(silence(0.5), chunk=512)
    assert await conn.wait_closed() == CLOSE_NORMAL
    first, second = conn.errors
    assert set(first) == keys and set(second) == keys
    recoverable, fatal = ErrorFrame.model_validate(first), ErrorFrame.model_validate(second)
    assert recoverable.description == "injected recoverable"
    assert fatal.description == "injected fatal"
    if shape != "error":  # the bare-string shape says nothing about recoverability
        assert not recoverable.is_fatal and fatal.is_fatal
    assert srv.stats.errors_injected == 2 and srv.stats.frames_received == 6


async def test_drop_counts_32ms_windows_even_inside_an_append(
    srv: LocalBasetenServer, connect: Any
) -> None:
    """``drop_after_frames`` counts 512-sample windows cut from the appended PCM, so a
    plan breaks a Qwen3 stream at the same audio position as a Whisper one: window 5 ends
    inside the second 100 ms append (windows 4-6), and the TCP connection dies there."""
    srv.faults = FaultPlan(drop_after_frames=5)
    conn = await connect(srv)
    await conn.append(phrase(0))
    await conn.wait_closed()
    assert conn.ws.close_code != CLOSE_NORMAL and conn.frames == []
    assert srv.stats.dropped_connections == 1 and srv.stats.frames_received == 5
    assert srv.stats.appends_received == 2 and srv.stats.close_codes_sent == []


async def test_stall_stops_answering_commits(srv: LocalBasetenServer, connect: Any) -> None:
    """``stall_after_frames``: nothing read or answered any more, the socket stays open."""
    srv.faults = FaultPlan(stall_after_frames=4)
    conn = await connect(srv)
    # Little enough audio for the socket buffers: the server reads none of it any more.
    await conn.append(phrase(0)[: 5 * QWEN3_CHUNK_SAMPLES])
    await conn.commit()
    await srv.wait_for(lambda s: s.stalled_connections == 1)
    await asyncio.sleep(1.0)
    assert conn.frames == [] and not conn.closed.is_set()
    assert srv.stats.commits_received == 0


async def test_503_and_401_at_the_upgrade(
    srv: LocalBasetenServer, connect: Any, http: aiohttp.ClientSession
) -> None:
    """Same gateway as Whisper: a bad key is 401, an injected 503 refuses the upgrade."""
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await http.ws_connect(srv.url + PROD, headers={"Authorization": "Api-Key wrong"})
    assert info.value.status == 401
    srv.faults = FaultPlan(reject_upgrades_with_503=1)
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await connect(srv)
    assert info.value.status == 503
    conn = await connect(srv)
    await conn.commit()
    await conn.wait_for(lambda c: len(c.flushes) == 1)
    assert srv.stats.unavailable_503 == 1 and srv.stats.auth_failures == 1


# --------------------------------------------------------------------------- v2 stub
async def test_v2_stub_speaks_first_with_session_created(
    baseten_server: BasetenServerFactory, http: aiohttp.ClientSession
) -> None:
    """``protocol="v2"``: ``session.created`` before the client says anything, then
    every frame is read and ignored until the client closes."""
    srv = await baseten_server(api_key=KEY, protocol="v2")
    ws = await http.ws_connect(srv.url + PROD, headers={"Authorization": f"Bearer {KEY}"})
    msg = await ws.receive(timeout=5)
    assert msg.type == aiohttp.WSMsgType.TEXT
    created = parse_server_message(msg.data)
    assert isinstance(created, SessionCreated)
    assert created.session is not None and str(created.session["id"]).startswith("sess_")
    await ws.send_str(OFFICIAL_HANDSHAKE.to_wire())
    await ws.send_str(append_message(np.zeros(1600, dtype=np.int16).tobytes()))
    await ws.send_bytes(b"\x00\x00")
    await srv.wait_for(lambda s: s.frames_ignored == 3)
    with pytest.raises(asyncio.TimeoutError):
        await ws.receive(timeout=0.3)
    await ws.close()
    await srv.wait_for(lambda s: s.client_disconnects == 1)
    assert srv.stats.sessions_created_sent == 1 and srv.stats.streams_started == 0


# --------------------------------------------------------------------------- CLI, process
def test_every_fault_switch_round_trips_through_the_cli_flags() -> None:
    """``BasetenServerProcess`` passes a plan as flags; the CLI parses them back."""
    plan = FaultPlan(
        reject_upgrades_with_503=2,
        drop_after_frames=7,
        drop_connections=3,
        stall_after_frames=9,
        close_after_commit=1,
        close_after_commit_reply=2,
        flush_reply_without_is_final=True,
        error_shape="error",
    )
    args = _parser().parse_args(["--protocol", "qwen3", *_fault_flags(plan)])
    assert args.protocol == "qwen3"
    assert (args.fail_first_upgrades, args.drop_after_frames, args.drop_connections) == (2, 7, 3)
    assert args.stall_after_frames == 9
    assert (args.close_after_commit, args.close_after_commit_reply) == (1, 2)
    assert args.flush_reply_without_is_final is True and args.error_shape == "error"
    defaults = _parser().parse_args(_fault_flags(FaultPlan()))
    assert defaults.protocol == "whisper" and defaults.error_shape == "message"
    assert not defaults.flush_reply_without_is_final and defaults.close_after_commit == 0


async def test_process_serves_qwen3_with_its_switches(http: aiohttp.ClientSession) -> None:
    """``BasetenServerProcess(protocol="qwen3")`` (scripted engine, energy VAD: no model
    to load) passes the protocol and the Qwen3 switches to the CLI."""
    async with BasetenServerProcess(
        api_key=KEY,
        protocol="qwen3",
        faults=FaultPlan(flush_reply_without_is_final=True),
        extra_args=("--engine", "scripted", "--workers", "0", "--vad", "energy"),
    ) as proc:
        ws = await http.ws_connect(proc.url + PROD, headers={"Authorization": f"Api-Key {KEY}"})
        conn = Conn(ws)
        try:
            await conn.append(synthesize(TEST_PHRASES[0]))
            await conn.commit()
            await conn.wait_for(lambda c: len(c.raw_flushes) == 1)
            (raw,) = conn.raw_flushes
            assert "is_final" not in raw and raw["segments"] and raw["language_code"] == "English"
            stats = await proc.stats()
            assert stats["commits_received"] == 1 and stats["flush_replies_sent"] == 1
            assert stats["appends_received"] >= 1
        finally:
            await conn.aclose()
