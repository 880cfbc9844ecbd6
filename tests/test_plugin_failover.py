"""A fallback Baseten endpoint: the stream moves there and back without losing a word.

Two real local Baseten servers (the same Whisper engine) play primary and fallback. The
primary dies mid-utterance, answers 503 for ever, hangs, or comes back; every test asserts
each word heard exactly once, on one continuous timeline, and what the switch cost.
"""

from __future__ import annotations

import asyncio

import pytest
from livekit.agents import APIConnectionError
from livekit.agents import stt as lk_stt

from localdev.baseten.faults import FaultPlan, InjectedError
from localdev.wer import normalise
from plugins.baseten_stt import STT
from plugins.baseten_stt.failover import EndpointSwitch
from tests.fixtures.bounded import within
from tests.fixtures.plugin import StreamRun, plugin_speech, push_audio
from tests.test_plugin_faults import KEY, ROUTE, TWO, assert_all_words_once

E = lk_stt.SpeechEventType
SR = 16_000


def failover_stt(primary, fallback, **kw) -> STT:
    kw.setdefault("keepalive_interval_s", 0.3)
    kw.setdefault("stall_timeout_s", 1.5)
    kw.setdefault("failback_probe_interval_s", 0.3)
    return STT(
        api_key=KEY,
        model_endpoint=primary.url + ROUTE,
        fallback_endpoints=[fallback.url + ROUTE],
        **kw,
    )


class Recorder:
    """Runs one stream, collecting events and endpoint switches."""

    def __init__(self, stt: STT) -> None:
        self.stt = stt
        self.run = StreamRun()
        self.switches: list[EndpointSwitch] = []
        self.finals = asyncio.Queue[str]()
        stt.on("endpoint_switched", self.switches.append)
        self.stream = stt.stream()
        self._consumer = asyncio.create_task(self._consume())

    async def _consume(self) -> None:
        try:
            async for ev in self.stream:
                self.run.events.append(ev)
                if ev.type == E.FINAL_TRANSCRIPT:
                    self.finals.put_nowait(ev.alternatives[0].text)
        except Exception as e:  # the test asserts on it
            self.run.error = e

    async def push(self, pcm, *, end: bool = False, speedup: float = 4.0) -> None:
        await push_audio(self.stream, pcm, sample_rate=SR, end=end, speedup=speedup)

    async def finish(self, timeout_s: float = 60.0) -> StreamRun:
        await within(self._consumer, timeout_s, "the stream's last event")
        await within(self.stream.aclose(), 15, "stream.aclose()")
        await within(self.stt.aclose(), 15, "stt.aclose()")
        return self.run


async def test_primary_dying_mid_utterance_fails_over_without_losing_a_word(
    baseten_server,
) -> None:
    primary = await baseten_server(api_key=KEY)
    fallback = await baseten_server(api_key=KEY)
    rec = Recorder(failover_stt(primary, fallback))
    pcm, onsets = plugin_speech(TWO)
    cut = round((onsets[0] + 0.8) * SR)  # mid-way through the first phrase
    await rec.push(pcm[:cut])
    await primary.wait_for(lambda s: s.frames_received * 512 >= cut - 2048, within_s=10)
    # the deployment goes away with the socket open
    await within(primary.aclose(), 15, "the primary's aclose()")
    await within(rec.push(pcm[cut:], end=True), 30, "pushing the rest of the audio")
    run = await rec.finish()
    assert_all_words_once(run, onsets)
    assert [s.after_failure and not s.to_primary for s in rec.switches] == [True]
    assert rec.switches[0].to_endpoint == fallback.url + ROUTE
    assert rec.stt.stats.failovers == 1 and rec.stt.stats.failbacks == 0
    # the fallback got the unfinalised start of the first phrase, not only what followed
    assert fallback.stats.connections == 1
    assert normalise(fallback.stats.final_texts[0]) == normalise(TWO[0])


async def test_a_503_storm_fails_over_after_failover_after_s(baseten_server) -> None:
    primary = await baseten_server(api_key=KEY)
    primary.faults = FaultPlan(reject_upgrades_with_503=10_000)
    fallback = await baseten_server(api_key=KEY)
    rec = Recorder(failover_stt(primary, fallback, failover_after_s=0.5))
    pcm, onsets = plugin_speech(TWO)
    await rec.push(pcm, end=True)
    run = await rec.finish()
    assert_all_words_once(run, onsets)
    assert primary.stats.unavailable_503 >= 1 and primary.stats.connections == 0
    assert rec.stt.stats.failovers == 1 and fallback.stats.connections == 1


async def test_fatal_error_frames_fail_over_at_once(baseten_server) -> None:
    primary = await baseten_server(api_key=KEY)
    primary.faults = FaultPlan(
        inject_errors=[
            InjectedError(after_frames=35, recoverable=False, message="GPU lost", connections=99)
        ]
    )
    fallback = await baseten_server(api_key=KEY)
    # (the primary answers probes: its handshake works, only audio kills it)
    rec = Recorder(failover_stt(primary, fallback, failback_probe_interval_s=30))
    pcm, onsets = plugin_speech(TWO)
    await rec.push(pcm, end=True)
    run = await rec.finish()
    assert_all_words_once(run, onsets)
    assert primary.stats.errors_injected == 1, "one fatal error was enough to leave"
    assert rec.switches[0].reason.endswith("GPU lost")


async def test_a_hung_primary_fails_over_on_the_first_stall(baseten_server) -> None:
    primary = await baseten_server(api_key=KEY)
    primary.faults = FaultPlan(stall_after_frames=40, stall_connections=99)
    fallback = await baseten_server(api_key=KEY)
    # (a probe sends no audio, so this primary would pass it: see the flapping test)
    rec = Recorder(failover_stt(primary, fallback, failback_probe_interval_s=30))
    pcm, onsets = plugin_speech(TWO)
    await rec.push(pcm, end=True, speedup=1.0)
    run = await rec.finish()
    assert_all_words_once(run, onsets)
    assert primary.stats.connections == 1 and rec.stt.stats.stalls == 1
    assert rec.stt.stats.failovers == 1


async def test_the_stream_returns_to_the_primary_once_it_answers_a_probe(
    baseten_server,
) -> None:
    primary = await baseten_server(api_key=KEY)
    primary.faults = FaultPlan(reject_upgrades_with_503=10_000)
    fallback = await baseten_server(api_key=KEY)
    rec = Recorder(failover_stt(primary, fallback, failover_after_s=0.3))
    pcm, onsets = plugin_speech(TWO)
    second = round((onsets[1] - 0.4) * SR)
    await rec.push(pcm[:second])
    first = await asyncio.wait_for(rec.finals.get(), 30)
    assert normalise(first) == normalise(TWO[0]) and fallback.stats.connections == 1
    primary.faults = FaultPlan()  # the primary is healthy again
    await primary.wait_for(lambda s: s.health_checks >= 1, within_s=10)  # probed
    for _ in range(100):
        if rec.stt.stats.failbacks:
            break
        await asyncio.sleep(0.05)
    await rec.push(pcm[second:], end=True)
    run = await rec.finish()
    assert_all_words_once(run, onsets)
    assert [(s.to_primary, s.after_failure) for s in rec.switches] == [(False, True), (True, False)]
    assert rec.stt.active_endpoint == primary.url + ROUTE
    # the second phrase was transcribed by the primary, the first by the fallback only
    assert [normalise(t) for t in primary.stats.final_texts] == [normalise(TWO[1])]
    assert [normalise(t) for t in fallback.stats.final_texts] == [normalise(TWO[0])]


async def test_both_endpoints_down_ends_in_one_final_error(baseten_server) -> None:
    primary = await baseten_server(api_key=KEY)
    fallback = await baseten_server(api_key=KEY)
    stt = failover_stt(primary, fallback)
    await primary.aclose()
    await fallback.aclose()
    rec = Recorder(stt)
    pcm, _ = plugin_speech([TWO[0]])
    await rec.push(pcm, end=True)
    run = await rec.finish()
    assert isinstance(run.error, APIConnectionError) and not run.error.retryable
    # both were tried, alternately, before giving up
    assert {s.to_endpoint for s in rec.switches} == {primary.url + ROUTE, fallback.url + ROUTE}


async def test_livekit_fallback_adapter_loses_the_utterance_in_flight(baseten_server) -> None:
    """Why the failover lives in the stream: LiveKit's ``stt.FallbackAdapter`` over the
    same two servers opens a new stream on the fallback, so the words the primary had
    received but not finalised when it died are never heard."""
    primary = await baseten_server(api_key=KEY)
    fallback = await baseten_server(api_key=KEY)
    stts = [
        STT(api_key=KEY, model_endpoint=primary.url + ROUTE),
        STT(api_key=KEY, model_endpoint=fallback.url + ROUTE),
    ]
    adapter = lk_stt.FallbackAdapter(stts)
    finals: list[str] = []
    stream = adapter.stream()

    async def consume() -> None:
        async for ev in stream:
            if ev.type == E.FINAL_TRANSCRIPT:
                finals.append(ev.alternatives[0].text)

    consumer = asyncio.create_task(consume())
    pcm, onsets = plugin_speech(TWO)
    cut = round((onsets[0] + 0.8) * SR)
    await push_audio(stream, pcm[:cut], sample_rate=SR, end=False)
    await primary.wait_for(lambda s: s.frames_received * 512 >= cut - 2048, within_s=10)
    await primary.aclose()
    await push_audio(stream, pcm[cut:], sample_rate=SR)
    await asyncio.wait_for(consumer, 60)
    await stream.aclose()
    await adapter.aclose()
    for one in stts:
        await one.aclose()
    heard = normalise(" ".join(finals))
    first_words, second_words = normalise(TWO[0]), normalise(TWO[1])
    assert heard[-len(second_words) :] == second_words
    assert heard[: len(first_words)] != first_words, (
        "FallbackAdapter kept the whole first phrase; is the failover in the plugin still needed?"
    )


def test_fallback_endpoints_are_validated_like_the_primary() -> None:
    with pytest.raises(ValueError, match="fallback_endpoints"):
        STT(
            api_key=KEY,
            model_endpoint="wss://model-abc.api.baseten.co/environments/production/websocket",
            fallback_endpoints=["abc"],
        )
    with pytest.raises(ValueError, match=r"fallback_endpoints.*plaintext"):
        STT(
            api_key=KEY,
            model_endpoint="abc",
            fallback_endpoints=["ws://10.1.2.3:8000/v1/websocket"],
        )
