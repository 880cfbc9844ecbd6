"""``push_frame``/``flush``/``end_input`` contract of the stream (it bypasses the base
class's input channel, so the base class's checks are re-asserted here)."""

from __future__ import annotations

import asyncio
import math

import numpy as np
import pytest
from livekit import rtc
from livekit.agents import stt as lk_stt

from localdev.wer import normalise
from plugins.baseten_stt import STT
from tests.fixtures.baseten import TEST_PHRASES
from tests.fixtures.plugin import plugin_speech

E = lk_stt.SpeechEventType
KEY = "input-key-7c2a"
ROUTE = "/environments/production/websocket"


def make_stt(srv, **kw) -> STT:
    return STT(api_key=KEY, model_endpoint=srv.url + ROUTE, keepalive_interval_s=0.5, **kw)


async def collect(stream: lk_stt.RecognizeStream) -> list[lk_stt.SpeechEvent]:
    return [ev async for ev in stream]


async def test_stereo_frames_of_odd_sizes_with_flushes_arrive_as_exact_mono_frames(
    baseten_server,
) -> None:
    srv = await baseten_server(api_key=KEY)
    # Framing alone: without manual_flush a flush only drains the resampler (with it, a
    # flush ends the utterance: tests/test_plugin_flush.py).
    stt = make_stt(srv, manual_flush=False)
    stream = stt.stream()
    consumer = asyncio.create_task(collect(stream))
    pcm, _ = plugin_speech([TEST_PHRASES[1]])
    stereo = np.repeat(pcm, 2)  # both channels carry the speech
    i, sizes = 0, [160, 333, 512, 7, 1024]
    while i < len(pcm):
        n = min(sizes[i % len(sizes)], len(pcm) - i)
        stream.push_frame(rtc.AudioFrame(stereo[2 * i : 2 * (i + n)].tobytes(), 16000, 2, n))
        if i % 7 == 0:
            stream.flush()  # framing must not change
        i += n
        await asyncio.sleep(0.002)
    stream.end_input()
    events = await asyncio.wait_for(consumer, 30)
    await stream.aclose()
    await stt.aclose()
    finals = [e.alternatives[0].text for e in events if e.type == E.FINAL_TRANSCRIPT]
    assert [normalise(f) for f in finals] == [normalise(TEST_PHRASES[1])], finals
    assert srv.stats.bad_frames == 0
    assert srv.stats.frames_received == math.ceil(len(pcm) / 512)
    usage = sum(e.recognition_usage.audio_duration for e in events if e.recognition_usage)
    assert usage == pytest.approx(len(pcm) / 16000, abs=1e-6)
    final = next(e for e in events if e.type == E.FINAL_TRANSCRIPT)
    assert final.speech_end_time is not None and final.speech_end_time <= final.created_at


async def test_push_contract_rate_change_and_push_after_end(baseten_server) -> None:
    srv = await baseten_server(api_key=KEY)
    stt = make_stt(srv)
    stream = stt.stream()
    stream.push_frame(rtc.AudioFrame(bytes(640), 16000, 1, 320))
    with pytest.raises(ValueError, match="sample rate"):
        stream.push_frame(rtc.AudioFrame(bytes(960), 24000, 1, 480))
    stream.end_input()
    with pytest.raises(RuntimeError, match="input ended"):
        stream.push_frame(rtc.AudioFrame(bytes(640), 16000, 1, 320))
    with pytest.raises(RuntimeError, match="input ended"):
        stream.flush()
    events = await asyncio.wait_for(collect(stream), 30)
    await stream.aclose()
    await stt.aclose()
    assert not [e for e in events if e.type == E.FINAL_TRANSCRIPT]  # 20 ms of silence
    assert srv.stats.frames_received == 1 and srv.stats.end_audio_received == 1
