"""``manual_flush``: LiveKit's flush ends the open utterance at once, losing no word.

On a flush the plugin sends the server VAD's remaining silence immediately instead of
waiting it out in real time (``SpeechStream.flush``). Judged on recorded human speech
through the real local Whisper server:

* the final for a clip followed by only 100 ms of silence arrives after a flush, with
  every word (WER as without a flush) and word times on the caller's own timeline;
* a second utterance after a flush keeps its exact times (the injected silence is on the
  wire only), and its words are not merged into or split from the first;
* with ``manual_flush=False`` the capability is off and a flush sends nothing;
* the final a flush asks for is not held back by a partial still decoding.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import numpy as np
import pytest
from livekit import rtc
from livekit.agents import stt as lk_stt

from localdev.human_speech import clip as clip_named
from localdev.speech import silence
from localdev.user_turns import from_clip
from localdev.wer import word_error_rate
from plugins.baseten_stt import STT
from tests.fixtures.baseten import BasetenServerFactory

KEY = "flush-key-7d21"
ROUTE = "/environments/production/websocket"
RATE = 16_000
FRAME = 320  # 20 ms, as a room delivers
#: Less than the server VAD's 300 ms min silence: without a flush no final could come yet.
SHORT_TAIL_S = 0.1


def _speech(name: str) -> tuple[str, np.ndarray]:
    """A clip's words and its audio without its own trailing silence (Silero-measured)."""
    turn = from_clip(clip_named(name))
    assert turn.sample_rate == RATE and turn.text
    samples = turn.samples[: turn.samples.size - round(turn.tail_s * RATE)]
    return turn.text, samples


async def _push_real_time(stream: lk_stt.RecognizeStream, pcm: np.ndarray) -> None:
    for i in range(0, len(pcm), FRAME):
        chunk = pcm[i : i + FRAME]
        stream.push_frame(
            rtc.AudioFrame(
                data=chunk.tobytes(),
                sample_rate=RATE,
                num_channels=1,
                samples_per_channel=len(chunk),
            )
        )
        await asyncio.sleep(FRAME / RATE)


async def _next_final(stream: lk_stt.RecognizeStream, within_s: float) -> lk_stt.SpeechEvent:
    async with asyncio.timeout(within_s):
        async for ev in stream:
            if ev.type == lk_stt.SpeechEventType.FINAL_TRANSCRIPT:
                return ev
    raise AssertionError("stream ended without a final")


async def test_flush_ends_the_utterance_without_waiting_for_server_silence(
    baseten_server: BasetenServerFactory,
) -> None:
    srv = await baseten_server(api_key=KEY)
    stt = STT(api_key=KEY, model_endpoint=srv.url + ROUTE)
    assert stt.capabilities.manual_flush
    (text_a, first), (text_b, second) = (
        _speech("endgame_hear_me"),
        _speech("audioeval_quick_brown_fox"),
    )
    lead = silence(0.5)
    stream = stt.stream()
    try:
        await _push_real_time(stream, np.concatenate([lead, first, silence(SHORT_TAIL_S)]))
        stream.flush()
        ev1 = await _next_final(stream, within_s=10)
        # the same again for a second utterance, after a real pause of 1 s
        gap = silence(1.0)
        await _push_real_time(stream, np.concatenate([gap, second, silence(SHORT_TAIL_S)]))
        stream.flush()
        ev2 = await _next_final(stream, within_s=10)
    finally:
        await stream.aclose()
        await stt.aclose()

    text1, text2 = ev1.alternatives[0].text, ev2.alternatives[0].text
    assert word_error_rate(text_a, text1) <= 0.1, text1
    assert word_error_rate(text_b, text2) <= 0.1, text2
    assert stt.stats.flushes == 2
    # ~0.33 s + margin per flush (300 ms min silence + 30 ms pad + one 32 ms window)
    assert 0.6 <= stt.stats.injected_silence_s <= 0.9

    # Word times are on the caller's timeline: the first flush's silence is not counted.
    first_end = lead.size / RATE + first.size / RATE
    second_start = first_end + SHORT_TAIL_S + gap.size / RATE
    second_end = second_start + second.size / RATE
    assert ev1.alternatives[0].end_time == pytest.approx(first_end, abs=0.35)
    assert ev2.alternatives[0].start_time >= second_start - 0.35
    assert ev2.alternatives[0].end_time == pytest.approx(second_end, abs=0.35)


async def test_flush_sends_nothing_without_the_capability(
    baseten_server: BasetenServerFactory,
) -> None:
    srv = await baseten_server(api_key=KEY)
    stt = STT(api_key=KEY, model_endpoint=srv.url + ROUTE, manual_flush=False)
    assert not stt.capabilities.manual_flush
    _, speech = _speech("endgame_hear_me")
    stream = stt.stream()
    try:
        await _push_real_time(stream, np.concatenate([silence(0.3), speech, silence(SHORT_TAIL_S)]))
        stream.flush()
        # no silence was sent, so the server cannot have ended the utterance yet
        with pytest.raises(TimeoutError):
            await _next_final(stream, within_s=1.0)
    finally:
        await stream.aclose()
        await stt.aclose()
    assert stt.stats.flushes == 0


class _SlowPreviews:
    """The real Whisper engine, but every partial takes 2 s longer (a busy server)."""

    def __init__(self, engine: Any) -> None:
        self._engine = engine

    def warm_up(self) -> None:
        self._engine.warm_up()

    def transcribe(self, pcm: Any, *, time_offset: float, params: Any, final: bool = True) -> Any:
        if not final:
            time.sleep(2.0)
        return self._engine.transcribe(pcm, time_offset=time_offset, params=params, final=final)


async def test_a_flushed_final_does_not_wait_for_a_partial_still_decoding(
    baseten_server: BasetenServerFactory, whisper_engine: Any
) -> None:
    # The clip is 1.0 s of speech: its first partial (due at 0.5 s) is still decoding when
    # the flush ends the utterance. The preview is obsolete then; the final must not queue
    # behind it (the stand-in abandons it, as its result would come after the final).
    srv = await baseten_server(api_key=KEY, engine=_SlowPreviews(whisper_engine))
    stt = STT(api_key=KEY, model_endpoint=srv.url + ROUTE)
    text, speech = _speech("endgame_hear_me")
    stream = stt.stream()
    try:
        await _push_real_time(stream, np.concatenate([silence(0.3), speech, silence(SHORT_TAIL_S)]))
        flushed_at = time.monotonic()
        stream.flush()
        ev = await _next_final(stream, within_s=10)
        waited = time.monotonic() - flushed_at
    finally:
        await stream.aclose()
        await stt.aclose()
    assert word_error_rate(text, ev.alternatives[0].text) <= 0.1
    # a final decode of 1 s of audio takes ~0.1-0.5 s here; behind the partial it was >= 1.5 s
    assert waited < 1.5, f"the final waited {waited:.2f} s after the flush"
