"""bench.job_profile: each py-spy sample is charged to the innermost component on its stack."""

from __future__ import annotations

from bench.job_profile import HANDOFFS, NATIVE, UNOWNED, owner_of, shares

LOOP = "BaseEventLoop._run_once (asyncio/base_events.py:1922);Handle._run (asyncio/events.py:80)"


def stack(*frames: str) -> list[str]:
    return [*LOOP.split(";"), *frames]


def test_the_innermost_component_owns_the_sample() -> None:
    # a resampler called by Silero is resampling, not VAD
    assert (
        owner_of(
            stack(
                "VADStream._main_task (silero/vad.py:412)",
                "AudioResampler.push (rtc/audio_resampler.py:110)",
                "FfiClient.request (rtc/_ffi_client.py:315)",
            )
        )
        == "resampling (LiveKit AudioResampler)"
    )
    # a socket write under our STT's send loop is the STT client's
    assert (
        owner_of(
            stack(
                "SpeechStream._send_loop (plugins/baseten_stt/stream.py:700)",
                "_SelectorSocketTransport.write (asyncio/selector_events.py:1057)",
            )
        )
        == "STT client (plugins/baseten_stt)"
    )


def test_ffi_plumbing_is_charged_to_its_caller_and_only_then_to_rtc() -> None:
    apm = stack(
        "_ParticipantAudioInputStream._process_frame (agents/voice/room_io/_input.py:395)",
        "AudioProcessingModule.process_stream (rtc/apm.py:60)",
        "FfiClient.request (rtc/_ffi_client.py:315)",
    )
    assert owner_of(apm) == "AGC (WebRTC APM, LiveKit default)"
    delivery = [
        "ffi_event_callback (rtc/_ffi_client.py:183)",
        "FfiQueue.put (rtc/_ffi_client.py:90)",
    ]
    assert owner_of(delivery) == "LiveKit rtc event delivery (Rust -> Python, per frame)"


def test_idle_waits_are_not_counted_and_the_rest_is_named() -> None:
    assert owner_of(stack("EpollSelector.select (selectors.py:468)")) is None
    assert (
        owner_of(["Thread.run (threading.py:982)", "_worker (concurrent/futures/thread.py:81)"])
        is None
    )
    assert owner_of([""]) == NATIVE
    assert owner_of(["_WorkItem.run (concurrent/futures/thread.py:58)"]) == HANDOFFS
    assert owner_of(stack("json.dumps (json/__init__.py:231)")) == UNOWNED


def test_shares_are_of_busy_samples_only() -> None:
    raw = [
        f"{LOOP};VADStream._main_task (silero/vad.py:412) 3",
        f"{LOOP};SpeechStream.push_frame (plugins/baseten_stt/stream.py:300) 1",
        f"{LOOP};EpollSelector.select (selectors.py:468) 96",
    ]
    by_component, busy = shares(raw)
    assert busy == 4
    assert by_component == {"Silero VAD": 0.75, "STT client (plugins/baseten_stt)": 0.25}
