"""Where a job process's Python CPU goes, by component: py-spy samples, grouped by owner.

``record(pids, duration_s)`` samples each job process with ``py-spy record`` (in-process
sampling is not possible: the jobs are LiveKit's, forked from its forkserver) and returns
the share of the *busy* samples each component owns. A sample belongs to the innermost
frame whose file has an owner in ``OWNERS`` (so a websocket write under the STT's send
loop counts as the STT client, a resampler under Silero counts as resampling); samples
parked in an idle wait (selector, condition, executor queue) are left out. Native work
called from Python (ONNX Runtime, the FFI into the Rust WebRTC core) lands on its Python
caller; the Rust core's own threads are not Python and are reported by thread name in
``bench.capacity_bench``.

py-spy is a dev dependency; the module reports ``None`` when it is missing or refused
(a container without ``CAP_SYS_PTRACE``).
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import tempfile
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

#: (component, path fragment): checked in order against each frame's ``(file:line)``.
#: py-spy prints paths relative to their ``sys.path`` entry (``silero/vad.py``,
#: ``agents/voice/...``, ``agent/...`` for this app), hence the leading ``(`` anchors.
OWNERS: tuple[tuple[str, str], ...] = (
    ("resampling (LiveKit AudioResampler)", "(rtc/audio_resampler.py"),
    ("AGC (WebRTC APM, LiveKit default)", "(rtc/apm.py"),
    ("Silero VAD", "(silero/"),
    ("turn detector", "(agents/inference/eot/"),
    ("turn detector", "(agent/turn_policy.py"),
    ("STT client (plugins/baseten_stt)", "(plugins/baseten_stt/"),
    ("TTS client (Cartesia)", "(cartesia/"),
    ("TTS client (Cartesia)", "(agents/tts/"),
    ("LLM client (OpenAI)", "(openai/"),
    ("LLM client (OpenAI)", "(agents/llm/"),
    ("transcript sync (agent's words to its audio)", "(agents/voice/transcription/"),
    ("room audio in (LiveKit room_io)", "(agents/voice/room_io/_input.py"),
    ("room audio out (LiveKit room_io)", "(agents/voice/room_io/_output.py"),
    ("LiveKit telemetry (loop monitor, traces)", "(agents/telemetry/"),
    ("our app (turn metrics, logs)", "(agent/"),
    ("logging (structlog, stdlib)", "(structlog/"),
    ("logging (structlog, stdlib)", "(logging/"),
    ("agent session (LiveKit voice core)", "(agents/voice/"),
)
#: Plumbing that owns a sample only when no component above is on its stack: the FFI is
#: how every component reaches the Rust core, so it is charged to its caller first.
#: Checked in this order (not innermost first): a frame delivered from Rust passes
#: through generic rtc code on its way in.
FALLBACK_OWNERS: tuple[tuple[str, str], ...] = (
    ("LiveKit rtc event delivery (Rust -> Python, per frame)", "ffi_event_callback ("),
    ("LiveKit rtc (room, tracks)", "(rtc/"),
)
#: Leaf frames that mean "waiting", not working.
IDLE_LEAVES = (
    "EpollSelector.select (",
    "Condition.wait (",
    "_worker (concurrent/futures/thread.py",
    "Event.wait (",
    "Thread.join (",
    "_wait_for_tstate_lock (",
)
UNOWNED = "event loop and other (asyncio, threads, unattributed)"
#: Run-in-executor plumbing: per 32 ms VAD window, Silero hands inference to a thread.
HANDOFFS = "thread-pool hand-offs (run_in_executor: Silero's per-window inference)"
#: A thread py-spy saw busy with no Python frame at all (native code, e.g. ONNX Runtime).
NATIVE = "native code with no Python frame"
#: 50 Hz keeps py-spy itself off the CPU it measures (100 Hz fell behind at 4 calls).
RATE_HZ = 50


def owner_of(frames: list[str]) -> str | None:
    """The component owning one sample (``frames`` root first), or None when idle."""
    if not frames or frames == [""]:
        return NATIVE
    if any(frames[-1].startswith(idle) for idle in IDLE_LEAVES):
        return None
    for frame in reversed(frames):
        for component, fragment in OWNERS:
            if fragment in frame:
                return component
    for component, fragment in FALLBACK_OWNERS:  # in priority order, anywhere on the stack
        if any(fragment in frame for frame in frames):
            return component
    if any("(concurrent/futures/" in f or "_chain_future" in f for f in frames):
        return HANDOFFS
    return UNOWNED


def shares(raw_lines: Iterable[str]) -> tuple[dict[str, float], int]:
    """py-spy's raw (collapsed) output -> (component: share of busy samples, busy count)."""
    counts: Counter[str] = Counter()
    for line in raw_lines:
        stack, _, n = line.rstrip("\n").rpartition(" ")
        if not n.isdigit():
            continue
        component = owner_of(stack.split(";") if stack else [])
        if component is not None:
            counts[component] += int(n)
    busy = sum(counts.values())
    return ({c: k / busy for c, k in counts.most_common()} if busy else {}), busy


def py_spy() -> str | None:
    found = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
    return found


async def record(pids: list[int], duration_s: float) -> tuple[dict[str, float], int] | None:
    """Sample every pid for ``duration_s`` at once; None when py-spy cannot run."""
    exe = py_spy()
    if exe is None or not pids:
        return None
    with tempfile.TemporaryDirectory(prefix="job-profile-") as tmp:
        outs = [Path(tmp) / f"{pid}.raw" for pid in pids]
        procs = [
            await asyncio.create_subprocess_exec(
                *(exe, "record", "--pid", str(pid), "--duration", f"{duration_s:g}"),
                *("--rate", str(RATE_HZ), "--format", "raw", "--nonblocking", "-o", str(out)),
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
            )
            for pid, out in zip(pids, outs, strict=True)
        ]
        await asyncio.gather(*(p.wait() for p in procs))
        lines = [ln for out in outs if out.exists() for ln in out.read_text().splitlines()]
    if not lines:
        return None
    return shares(lines)
