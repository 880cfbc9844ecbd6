"""The E2E harness itself, against a real livekit-server on loopback.

Proves the pieces the worker E2E tests stand on: the server fixture answers and enforces its
keys, real WebRTC audio flows between two ``Caller``s through the SFU, ``lk.transcription``
text streams are recorded and attributed the way LiveKit Agents 1.8 publishes them, and the
server accepts an explicit agent dispatch. Timings are printed (run with ``-s``), not asserted
beyond generous sanity bounds.
"""

from __future__ import annotations

import contextlib
import time
import urllib.request
import uuid
from typing import Literal

import numpy as np
import numpy.typing as npt
import pytest
from livekit import api

from localdev.caller import (
    ATTR_FINAL,
    ATTR_SEGMENT_ID,
    ATTR_TRACK_ID,
    MIC_SAMPLE_RATE,
    SPEECH_RMS_THRESHOLD,
    TOPIC_TRANSCRIPTION,
    Caller,
    RoomAdmin,
    contains_words,
    to_mic_rate,
)
from localdev.livekit_server import LocalLiveKitServer
from localdev.speech import synthesize

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

SPOKEN = "the quick brown fox jumps over the lazy dog"


def _room() -> str:
    return f"harness-{uuid.uuid4().hex[:8]}"


def _join(
    lk: LocalLiveKitServer,
    room: str,
    identity: str,
    *,
    kind: Literal["standard", "agent"] = "standard",
    publish_mic: bool = True,
) -> contextlib.AbstractAsyncContextManager[Caller]:
    return Caller.join(
        url=lk.url,
        api_key=lk.api_key,
        api_secret=lk.api_secret,
        room=room,
        identity=identity,
        kind=kind,
        publish_mic=publish_mic,
    )


def test_server_answers_and_enforces_keys(livekit_server: LocalLiveKitServer) -> None:
    print(f"\nlivekit-server ready after {livekit_server.ready_seconds:.3f} s")
    with urllib.request.urlopen(livekit_server.http_url + "/", timeout=5) as resp:
        assert resp.status == 200
        assert resp.read().strip() == b"OK"
    assert livekit_server.url.startswith("ws://127.0.0.1:")
    assert livekit_server.api_secret not in repr(livekit_server)
    assert livekit_server.api_key not in repr(livekit_server)


async def test_room_api_rejects_wrong_secret(livekit_server: LocalLiveKitServer) -> None:
    room = _room()
    async with RoomAdmin(
        url=livekit_server.url, api_key=livekit_server.api_key, api_secret=livekit_server.api_secret
    ) as admin:
        created = await admin.create_room(room)
        assert created.name == room
    async with RoomAdmin(
        url=livekit_server.url, api_key=livekit_server.api_key, api_secret="x" * 40
    ) as bad:
        with pytest.raises(api.TwirpError) as err:
            await bad.create_room(_room())
    assert err.value.status == 401


async def test_speech_flows_between_two_callers(livekit_server: LocalLiveKitServer) -> None:
    room = _room()
    speech = synthesize(SPOKEN, sample_rate=16_000)
    t0 = time.time()
    async with (
        _join(livekit_server, room, "listener", publish_mic=False) as listener,
        _join(livekit_server, room, "talker") as talker,
    ):
        seen = await listener.wait_for_participant(identity="talker", timeout=20)
        assert not seen.is_agent
        first_frame = await listener.wait_for_first_audio_frame(identity="talker", timeout=20)
        said = await talker.say(speech, 16_000, trailing_silence_s=1.0)
        span = await listener.wait_for_speech(
            identity="talker", after=said.started_at, until_end=True, timeout=20
        )
        received = listener.audio["talker"]

        assert talker.mic_published_at is not None
        print(
            f"\nlistener joined in {listener.connect_seconds:.3f} s, "
            f"talker joined in {talker.connect_seconds:.3f} s; "
            f"first media {first_frame - talker.mic_published_at:.3f} s after publish "
            f"({first_frame - t0:.3f} s after the first join began); "
            f"speech onset seen {span.started_at - said.started_at:.3f} s after it was sent"
        )

    # The onset is the talker's speech: after it started, before it ended (+ generous slack).
    assert span.ended_at is not None
    assert said.started_at <= span.started_at < said.speech_ended_at + 2.0
    # Roughly as long as what was sent: espeak's leading/trailing quiet and word gaps make it
    # a bit shorter; a broken path (no audio, or noise throughout) would not fit.
    heard_s = span.ended_at - span.started_at
    assert 0.5 * said.speech_seconds < heard_s < said.speech_seconds + 1.0
    # Digital silence before the speech came through as silence: the detector has something
    # to tell apart, so it could fail.
    times, rms = np.array(received.times), np.array(received.rms)
    before = rms[times < said.started_at]
    assert before.size == 0 or before.max() < SPEECH_RMS_THRESHOLD
    assert rms.max() > 5 * SPEECH_RMS_THRESHOLD
    # And it is the same speech: the 10 ms energy envelope received matches the one sent
    # (Opus changes the samples, not the envelope). Noise or another clip would not correlate.
    similarity = _envelope_similarity(to_mic_rate(speech, 16_000), rms, received.durations)
    print(f"sent/received envelope similarity {similarity:.2f}")
    assert similarity > 0.8


def _envelope_similarity(
    sent: npt.NDArray[np.int16], received_rms: npt.NDArray[np.float64], durations: list[float]
) -> float:
    """Peak normalised cross-correlation of the sent and received 10 ms RMS envelopes."""
    assert set(np.round(durations, 4)) == {0.01}, "expects 10 ms received frames"
    frame = MIC_SAMPLE_RATE // 100
    usable = sent[: sent.size // frame * frame].astype(np.float64).reshape(-1, frame)
    sent_env = np.sqrt(np.mean(usable**2, axis=1))
    a = (sent_env - sent_env.mean()) / (sent_env.std() * sent_env.size)
    b = (received_rms - received_rms.mean()) / received_rms.std()
    return float(np.correlate(b, a, mode="valid").max())


async def test_agent_participant_and_transcription_streams(
    livekit_server: LocalLiveKitServer,
) -> None:
    """A stand-in agent publishes transcripts exactly like RoomIO does in agents 1.8.

    User transcript: a new stream per update, ``sender_identity`` = the user, final on the
    header. Agent transcript: one delta stream from the agent, final on the closing header.
    """
    room = _room()
    async with (
        _join(livekit_server, room, "user") as user,
        _join(livekit_server, room, "fake-agent", kind="agent", publish_mic=False) as agent,
    ):
        joined = await user.wait_for_agent(timeout=20)
        assert joined.identity == "fake-agent"
        assert joined.joined_at >= user.connected_at
        await agent.wait_for_participant(identity="user", timeout=20)
        user_track = user.mic_track_sid
        assert user_track is not None

        lp = agent.room.local_participant
        for text, final in (("hello", "false"), ("hello world", "true")):
            w = await lp.stream_text(
                topic=TOPIC_TRANSCRIPTION,
                sender_identity="user",
                attributes={
                    ATTR_FINAL: final,
                    ATTR_SEGMENT_ID: "SG_user1",
                    ATTR_TRACK_ID: user_track,
                },
            )
            await w.write(text)
            await w.aclose()

        w = await lp.stream_text(
            topic=TOPIC_TRANSCRIPTION,
            attributes={ATTR_FINAL: "false", ATTR_SEGMENT_ID: "SG_agent1"},
        )
        for chunk in ("Hi ", "there, ", "how can I help?"):
            await w.write(chunk)
        await w.aclose(attributes={ATTR_FINAL: "true"})

        user_seg = await user.wait_for_user_transcript(contains="hello world", timeout=20)
        agent_seg = await user.wait_for_agent_transcript(contains="how can i help", timeout=20)

    assert user_seg.role == "user" and user_seg.final and user_seg.text == "hello world"
    assert user_seg.updates >= 2  # the interim was seen, then replaced
    assert agent_seg.role == "agent" and agent_seg.final
    assert agent_seg.text == "Hi there, how can I help?"
    assert agent_seg.participant_identity == "fake-agent"
    assert contains_words(agent_seg.text, "there how")
    assert not contains_words(agent_seg.text, "help there")


async def test_explicit_agent_dispatch_is_accepted(livekit_server: LocalLiveKitServer) -> None:
    room = _room()
    async with RoomAdmin(
        url=livekit_server.url, api_key=livekit_server.api_key, api_secret=livekit_server.api_secret
    ) as admin:
        await admin.create_room(room)
        dispatch = await admin.dispatch_agent(
            agent_name="harness-agent", room=room, metadata='{"k": 1}'
        )
        assert dispatch.id
        assert dispatch.agent_name == "harness-agent"
        assert dispatch.room == room
        listed = await admin.list_dispatches(room)
    # The server also lists its own implicit dispatch for unnamed agents (agent_name ""),
    # created with the room; ours is the only named one.
    named = [d for d in listed if d.agent_name]
    assert [d.id for d in named] == [dispatch.id]
    assert named[0].metadata == '{"k": 1}'
