"""A server that hangs while the caller speaks is left within seconds; a slow one is not.

Both dialects, through the local stand-in (real Whisper) with recorded human speech pushed
in real time. ``stall_timeout_s`` and ``keepalive_interval_s`` stay at their defaults
(15 s / 5 s), so only the speech rule (``speech_stall_s``: the caller's speech sent with no
result back) can notice the hang before the audio ends; the log line says which rule
fired. How fast, in seconds, is measured by ``bench/stall_bench.py``, not asserted here.
"""

from __future__ import annotations

import asyncio
import logging

import numpy as np
import pytest
from livekit import rtc
from livekit.agents import stt as lk_stt

from localdev.baseten.faults import FaultPlan
from localdev.human_speech import clip
from localdev.speech import silence
from localdev.wer import word_error_rate
from plugins.baseten_stt import STT
from tests.fixtures.baseten import BasetenServerFactory

KEY = "stall-key-91c3"
ROUTE = "/environments/production/websocket"
RATE = 16_000
FRAME = 320
LEAD_S = 0.3
PROTOCOLS = {"whisper": "whisper", "qwen3-asr": "qwen3"}


async def _say(stt: STT, pcm: np.ndarray) -> list[str]:
    """``pcm`` in real time, then end of input; the finals."""
    stream = stt.stream()
    finals: list[str] = []

    async def consume() -> None:
        async for ev in stream:
            if ev.type == lk_stt.SpeechEventType.FINAL_TRANSCRIPT:
                finals.append(ev.alternatives[0].text)

    consumer = asyncio.create_task(consume())
    loop = asyncio.get_running_loop()
    started = loop.time()
    for i in range(0, pcm.size, FRAME):
        chunk = pcm[i : i + FRAME]
        stream.push_frame(rtc.AudioFrame(chunk.tobytes(), RATE, 1, chunk.size))
        await asyncio.sleep(max(0.0, started + (i + FRAME) / RATE - loop.time()))
    stream.end_input()
    await asyncio.wait_for(consumer, 40)
    await stream.aclose()
    return finals


@pytest.mark.parametrize("model", sorted(PROTOCOLS))
async def test_a_hang_mid_sentence_is_noticed_by_the_speech_rule_and_replayed(
    baseten_server: BasetenServerFactory, model: str, caplog: pytest.LogCaptureFixture
) -> None:
    speech = clip("endgame_ditch")
    # the server stops reading and answering 1 s into the 4.4 s question
    windows = round((LEAD_S + 1.0) * RATE / 512)
    srv = await baseten_server(
        api_key=KEY, protocol=PROTOCOLS[model], faults=FaultPlan(stall_after_frames=windows)
    )
    stt = STT(model=model, api_key=KEY, model_endpoint=srv.url + ROUTE)
    assert (stt.options.stall_timeout_s, stt.options.speech_stall_s) == (15.0, 1.75)
    with caplog.at_level(logging.WARNING, logger="plugins.baseten_stt"):
        finals = await _say(stt, np.concatenate([silence(LEAD_S), speech.samples(), silence(1.2)]))
    await stt.aclose()
    assert srv.stats.stalled_connections == 1
    assert stt.stats.stalls == 1 and stt.stats.reconnects == 1
    (lost,) = [r for r in caplog.records if "connection lost" in r.getMessage()]
    assert "s of speech" in lost.getMessage(), lost.getMessage()
    # nothing lost, nothing twice
    assert word_error_rate(speech.text, " ".join(finals)) <= 0.1, finals


@pytest.mark.parametrize("model", sorted(PROTOCOLS))
async def test_a_slow_but_alive_server_is_not_a_stall(
    baseten_server: BasetenServerFactory, model: str
) -> None:
    speech = clip("beckett_fail_better")  # 10 s of speech with short pauses
    srv = await baseten_server(
        api_key=KEY, protocol=PROTOCOLS[model], faults=FaultPlan(inference_delay_s=1.0)
    )
    stt = STT(model=model, api_key=KEY, model_endpoint=srv.url + ROUTE)
    finals = await _say(stt, np.concatenate([silence(LEAD_S), speech.samples(), silence(2.5)]))
    await stt.aclose()
    assert stt.stats.stalls == 0 and stt.stats.reconnects == 0
    assert word_error_rate(speech.text, " ".join(finals)) <= 0.15, finals
