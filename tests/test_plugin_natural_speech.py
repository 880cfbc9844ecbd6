"""Recorded human speech (not synthetic) through a client and the local server.

Hearing is judged on people: every clip of ``localdev.human_speech.CLIPS`` (several
speakers, questions and statements, 1-10 s) goes the whole way a call's audio goes (48 kHz
room audio -> resampling -> exact 512-sample frames -> the server's Silero VAD -> Whisper
-> events), and what comes back is scored as a word error rate after normalising case and
punctuation (``localdev.wer``). No phrase list: the server's Whisper hears freely.

Each test prints ``WER <clip> <value> heard=<text>`` (the official client's lines start
with ``official client``; visible with ``pytest -s``, and the same numbers are in the
assertion message when it fails).
"""

from __future__ import annotations

import asyncio
import contextlib

import numpy as np
import numpy.typing as npt
import pytest
from livekit import rtc
from livekit.agents import stt as lk_stt

from localdev.human_speech import CLIPS, HumanClip
from localdev.speech import silence
from localdev.wer import word_error_rate
from plugins.baseten_stt import STT
from tests.fixtures.baseten import BasetenServerFactory, OfficialSttFactory
from tests.fixtures.plugin import run_stt

KEY = "natural-speech-key-51c2"
ROUTE = "/environments/production/websocket"
ROOM_RATE = 48_000  # what a LiveKit room typically delivers
#: Silence before each clip (which keeps its own short lead-in) and after it: the tail lets
#: the server VAD end the last utterance (300 ms of silence) with room to spare.
LEAD_S = 0.5
TAIL_S = 1.0
#: At most one word in ten wrong, per clip. With the engine alone all clips are at 0.00
#: (``python -m localdev.baseten.accuracy``); the margin absorbs a VAD cut inside a clip.
MAX_WER = 0.10
#: Clips the official client is scored on: a long question, a statement with commas, and
#: another speaker (a few are enough: it only has to show the same server hears for it).
OFFICIAL_CLIPS = ["endgame_ditch", "two_cities_best_of_times", "audioeval_quick_brown_fox"]


def upsample_to_room_rate(pcm16: npt.NDArray[np.int16]) -> npt.NDArray[np.int16]:
    """16 kHz -> 48 kHz by linear interpolation (the plugin must resample it back)."""
    t_in = np.arange(len(pcm16)) / 16_000
    t_out = np.arange(len(pcm16) * 3) / ROOM_RATE
    return np.interp(t_out, t_in, pcm16.astype(np.float64)).astype(np.int16)


def call_audio(clip: HumanClip) -> npt.NDArray[np.int16]:
    """The clip as a caller's 16 kHz audio: silence, the clip, silence."""
    return np.concatenate([silence(LEAD_S), clip.samples(), silence(TAIL_S)])


def score(clip: HumanClip, finals: list[str], prefix: str = "") -> tuple[float, str]:
    """WER of everything the client finalised; prints the per-clip line."""
    heard = " ".join(finals)
    wer = word_error_rate(clip.text, heard)
    print(f"{prefix}WER {clip.name} {wer:.2f} heard={heard}")
    return (
        wer,
        f"{prefix}WER {clip.name} {wer:.2f} > {MAX_WER}: said {clip.text!r}, heard {heard!r}",
    )


@pytest.mark.parametrize("clip", CLIPS, ids=[c.name for c in CLIPS])
async def test_our_plugin_hears_human_speech(
    baseten_server: BasetenServerFactory, clip: HumanClip
) -> None:
    audio = call_audio(clip)
    srv = await baseten_server(api_key=KEY)
    stt = STT(api_key=KEY, model_endpoint=srv.url + ROUTE)

    run = await run_stt(stt, upsample_to_room_rate(audio), sample_rate=ROOM_RATE)
    await stt.aclose()

    assert run.error is None
    wer, message = score(clip, run.finals)
    assert wer <= MAX_WER, message
    assert srv.stats.finals_sent == len(run.finals)  # every server final reached the app
    # Words sit on the stream timeline: after the lead silence (Whisper may start a first
    # word up to ~0.35 s early, at the decoded audio's start), inside the clip.
    finals = run.of(lk_stt.SpeechEventType.FINAL_TRANSCRIPT)
    first, last = finals[0].alternatives[0], finals[-1].alternatives[0]
    assert LEAD_S - 0.5 < first.start_time < LEAD_S + 0.5, first
    assert last.end_time <= LEAD_S + len(clip.samples()) / 16_000 + 0.1, last
    assert all(a.alternatives[0].start_time < a.alternatives[0].end_time for a in finals)
    # every frame the server saw was exactly one VAD window, the padded tail included
    assert srv.stats.bad_frames == 0
    assert srv.stats.frames_received == pytest.approx(len(audio) / 512, abs=1)


@pytest.mark.parametrize("name", OFFICIAL_CLIPS)
async def test_official_client_hears_human_speech_through_the_same_server(
    baseten_server: BasetenServerFactory, official_baseten_stt: OfficialSttFactory, name: str
) -> None:
    clip = next(c for c in CLIPS if c.name == name)
    srv = await baseten_server(api_key=KEY)
    client = official_baseten_stt(srv, api_key=KEY)
    stream = client.stream()
    finals: list[str] = []
    got_final = asyncio.Event()

    async def consume() -> None:
        async for event in stream:
            if event.type == lk_stt.SpeechEventType.FINAL_TRANSCRIPT:
                finals.append(event.alternatives[0].text)
                got_final.set()

    async def next_final() -> None:
        got_final.clear()
        await got_final.wait()

    consumer = asyncio.create_task(consume())
    try:
        # The official client never sends end_audio: the 1 s tail is what lets the server
        # VAD finalise. 20 ms room frames at 48 kHz (it resamples), 4x real time.
        room = upsample_to_room_rate(call_audio(clip))
        step = ROOM_RATE // 50
        for i in range(0, len(room), step):
            chunk = room[i : i + step]
            stream.push_frame(rtc.AudioFrame(chunk.tobytes(), ROOM_RATE, 1, len(chunk)))
            await asyncio.sleep(0.005)
        # Wait until what it heard is the clip (or 30 s), then until every final the
        # server sent has arrived, so a late extra final still counts against it.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(30):
                while word_error_rate(clip.text, " ".join(finals)) > MAX_WER:
                    await next_final()
        async with asyncio.timeout(10):
            while len(finals) < srv.stats.finals_sent:
                await next_final()
    finally:
        await stream.aclose()
        with contextlib.suppress(asyncio.CancelledError):
            await consumer
    wer, message = score(clip, finals, prefix="official client ")
    assert wer <= MAX_WER, message
    assert srv.stats.bad_frames == 0
