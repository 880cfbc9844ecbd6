"""Recorded natural speech (not synthetic) through our client and the local server.

The clips and their reference texts ship in ``pytest-audioeval`` (MIT): real voices, so
this checks the whole path (48 kHz room audio -> resampling -> exact 512-sample frames ->
server VAD -> recognition -> events) on audio espeak-ng cannot stand in for.
pocketsphinx's full language model is too weak to be a stable oracle on one-second clips
(it heard "hello world" as "hello where loot" once silence surrounded it), so the server
gets the clips' reference texts as its phrase list: it must still pick the right phrase
from the acoustics and place the words on the stream timeline.
"""

from __future__ import annotations

import numpy as np
import pytest
from livekit.agents import stt as lk_stt
from pytest_audioeval.samples.registry import SampleRegistry

from localdev.speech import silence
from plugins.baseten_stt import STT
from tests.fixtures.plugin import run_stt

KEY = "natural-speech-key-51c2"
ROUTE = "/environments/production/websocket"
ROOM_RATE = 48_000  # what a LiveKit room typically delivers


def words(text: str) -> list[str]:
    return "".join(c if c.isalnum() or c == " " else " " for c in text.lower()).split()


def clip(name: str) -> tuple[np.ndarray, str]:
    sample = next(s for s in SampleRegistry().by_lang("en") if s.name == name)
    assert sample.sample_rate == 16_000
    pcm16 = (np.clip(sample.audio_numpy(), -1.0, 1.0) * 32767).astype(np.int16)
    return pcm16, sample.reference_text


def upsample_to_room_rate(pcm16: np.ndarray) -> np.ndarray:
    """16 kHz -> 48 kHz by linear interpolation (the plugin must resample it back)."""
    t_in = np.arange(len(pcm16)) / 16_000
    t_out = np.arange(len(pcm16) * 3) / ROOM_RATE
    return np.interp(t_out, t_in, pcm16.astype(np.float64)).astype(np.int16)


CLIPS = ["counting", "hello_world", "quick_brown_fox"]


def reference_phrases() -> list[str]:
    return [" ".join(words(clip(name)[1])) for name in CLIPS]


@pytest.mark.parametrize("name", CLIPS)
async def test_recorded_speech_is_transcribed_word_for_word(baseten_server, name) -> None:
    pcm16, reference = clip(name)
    audio = np.concatenate(
        [silence(0.3), pcm16, silence(1.0)]  # trailing silence lets the server VAD close it
    )
    srv = await baseten_server(api_key=KEY, phrases=reference_phrases())
    stt = STT(api_key=KEY, model_endpoint=srv.url + ROUTE)

    run = await run_stt(stt, upsample_to_room_rate(audio), sample_rate=ROOM_RATE)
    await stt.aclose()

    assert run.error is None
    assert words(" ".join(run.finals)) == words(reference)
    speech_s = len(pcm16) / 16_000
    final = run.of(lk_stt.SpeechEventType.FINAL_TRANSCRIPT)[-1].alternatives[0]
    assert 0.2 <= final.start_time < 0.3 + 0.5  # speech starts after the 0.3 s lead
    assert final.end_time <= 0.3 + speech_s + 0.1
    # every frame the server saw was exactly one VAD window, the padded tail included
    assert srv.stats.bad_frames == 0
    assert srv.stats.frames_received == pytest.approx(len(audio) / 512, abs=1)
