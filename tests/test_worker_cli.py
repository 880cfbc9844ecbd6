"""``python agent.py ...`` as users run it: help, download-files, config errors, dev's
.env, the demo stub, the headless text console and (e2e) a real ``start`` worker."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from localdev.openai.server import LocalOpenAIServer
from tests.fixtures.worker import FAKE_SECRETS, REPO, run_agent, subprocess_env, valid_env


def test_help_needs_no_configuration() -> None:
    run = run_agent("--help", env={}, timeout=60)
    assert run.returncode == 0, run.output
    for command in ("start", "dev", "console", "download-files", "demo"):
        assert command in run.stdout
    assert run.stderr == ""
    assert "deprecat" not in run.output.lower()


@pytest.mark.parametrize("command", ["start", "dev", "console"])
def test_subcommand_help_needs_no_configuration(command: str) -> None:
    run = run_agent(command, "--help", env={}, timeout=60)
    assert run.returncode == 0, run.output
    assert "usage: agent.py " + command in run.stdout


def test_download_files_succeeds_offline_without_secrets(tmp_path: Path) -> None:
    # any network attempt would go through a dead proxy and fail
    dead = "http://127.0.0.1:9"
    env = {
        "HTTP_PROXY": dead,
        "HTTPS_PROXY": dead,
        "HF_HUB_OFFLINE": "1",
        "HF_HOME": str(tmp_path / "hf"),
    }
    run = run_agent("download-files", env=env, timeout=180)
    assert run.returncode == 0, run.output
    assert "all model files ready" in run.output
    assert "model ready" in run.output and "silero" in run.output
    assert "turn-detector-v1-mini" in run.output
    assert "deprecat" not in run.output.lower()


def test_start_without_baseten_key_exits_2_with_one_line() -> None:
    env = valid_env()
    del env["BASETEN_API_KEY"]
    run = run_agent("start", env=env, timeout=60)
    assert run.returncode == 2
    assert run.stderr.splitlines() == [
        "config error: BASETEN_API_KEY: required, but not set (expected your Baseten API key)"
    ]
    assert run.stdout == ""
    assert "Traceback" not in run.output
    for secret in FAKE_SECRETS.values():
        assert secret not in run.output


def test_dev_reads_dotenv_but_start_does_not(tmp_path: Path) -> None:
    lines = [f"{k}={v}" for k, v in valid_env().items()] + ["BASETEN_VAD_SPEECH_PAD_MS=-5"]
    (tmp_path / ".env").write_text("\n".join(lines) + "\n")

    dev = run_agent("dev", env={}, cwd=tmp_path, timeout=60)
    assert dev.returncode == 2
    assert dev.stderr.splitlines() == [
        "config error: BASETEN_VAD_SPEECH_PAD_MS: expected whole milliseconds between 0 and 5000 "
        "(got '-5')"
    ]

    start = run_agent("start", env={}, cwd=tmp_path, timeout=60)
    assert start.returncode == 2
    assert "config error: BASETEN_API_KEY: required, but not set" in start.stderr
    assert "BASETEN_VAD_SPEECH_PAD_MS" not in start.stderr


def test_demo_without_localdev_says_so_in_one_line(tmp_path: Path) -> None:
    # the Docker image layout: agent.py, agent/, plugins/, no localdev/
    shutil.copy(REPO / "agent.py", tmp_path / "agent.py")
    for package in ("agent", "plugins"):
        (tmp_path / package).symlink_to(REPO / package)
    env = subprocess_env({})
    env["PYTHONPATH"] = ""
    proc = subprocess.run(
        [sys.executable, "agent.py", "demo"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        "the demo needs a source checkout (localdev/ is not installed here)"
    ]


async def test_console_text_works_headless() -> None:
    """stdin/stdout pipes, no TTY, no audio devices, no LiveKit server."""
    async with LocalOpenAIServer(
        replies=["Sure, I can help with that.", "Goodbye for now."],
        api_key=FAKE_SECRETS["OPENAI_API_KEY"],
    ) as srv:
        env = subprocess_env(valid_env(OPENAI_BASE_URL=srv.base_url, AGENT_GREETING="Hello!"))
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(REPO / "agent.py"),
            "console",
            "--text",
            cwd=REPO,
            env=env,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        stdout, stderr = await asyncio.wait_for(
            proc.communicate(b"Can you help me?\n\nThanks, bye.\n"), timeout=120
        )
    out, err = stdout.decode(), stderr.decode()
    assert proc.returncode == 0, err
    assert out.splitlines() == [
        "agent: Hello!",
        "agent: Sure, I can help with that.",
        "agent: Goodbye for now.",
    ]
    assert [r["messages"][-1]["content"] for r in srv.requests] == [
        "Can you help me?",
        "Thanks, bye.",
    ]
    for secret in FAKE_SECRETS.values():
        assert secret not in out + err


# ----------------------------------------------------------------------------- e2e
def _room_api(lk_env: dict[str, str], *, room: str, agent_name: str | None = None) -> None:
    """Create ``room`` and dispatch ``agent_name`` to it, or (no agent) delete the room once
    the agent is in it.

    Deleting it while the agent is still joining (its "starting session" line comes first)
    could let the join create a new room that only the agent is in, whose job never ends.
    """
    from livekit import api

    async def go() -> None:
        async with api.LiveKitAPI(
            lk_env["LIVEKIT_URL"], lk_env["LIVEKIT_API_KEY"], lk_env["LIVEKIT_API_SECRET"]
        ) as lkapi:
            if agent_name is None:
                request = api.ListParticipantsRequest(room=room)
                for _ in range(300):  # 30 s; the agent joins ~0.2 s after its session starts
                    found = (await lkapi.room.list_participants(request)).participants
                    if any(p.kind == api.ParticipantInfo.Kind.AGENT for p in found):
                        break
                    await asyncio.sleep(0.1)
                else:
                    raise AssertionError(f"the agent never joined {room}")
                await lkapi.room.delete_room(api.DeleteRoomRequest(room=room))
                return
            await lkapi.room.create_room(api.CreateRoomRequest(name=room))
            await lkapi.agent_dispatch.create_dispatch(
                api.CreateAgentDispatchRequest(agent_name=agent_name, room=room)
            )

    asyncio.run(go())


@pytest.mark.e2e
def test_start_runs_a_production_worker_and_drains_on_sigterm() -> None:
    """A real livekit-server, a real dispatch: the job process's lines reach the main
    process's stdout as JSON with the job context; SIGTERM drains and exits 0."""
    from localdev.livekit_server import LocalLiveKitServer
    from localdev.worker_process import WorkerProcess

    with LocalLiveKitServer(
        api_key=FAKE_SECRETS["LIVEKIT_API_KEY"], api_secret=FAKE_SECRETS["LIVEKIT_API_SECRET"]
    ) as lk:
        # DRAIN_TIMEOUT 20: in about 1 run of 4 here the job of the deleted room does not
        # end and the drain waits its whole timeout (then exits 0): 60 s made that a
        # 72 s test. Cause not found yet.
        env = valid_env(**lk.env(), LIVEKIT_AGENT_NAME="e2e-agent", DRAIN_TIMEOUT="20")
        # WorkerProcess.start (on entering) waits for the "registered worker" line
        with WorkerProcess(env=env) as worker:
            (registered,) = worker.find_lines(lambda ln: ln["message"] == "registered worker")
            assert registered["agent_name"] == "e2e-agent"  # explicit dispatch
            assert worker.health() == 200

            _room_api(lk.env(), room="e2e-room", agent_name="e2e-agent")
            started = worker.wait_for_line_blocking(
                lambda ln: ln["message"] == "starting session",
                timeout=90,
                what="the job to start a session",
            )
            assert started["logger"] == "agent.worker"
            assert started["room"] == "e2e-room" and started["job_id"].startswith("AJ_")
            assert started["pid"] != worker.pid  # rendered in main, emitted in the job process
            # the default: our signals policy over LiveKit's local (never cloud) model
            assert started["turn_detection"] == "SignalTurnDetector(turn-detector-v1-mini)"

            # the call ends (room deleted), then the orchestrator stops the worker: the
            # drain waits for the job to finish, then the worker exits cleanly
            _room_api(lk.env(), room="e2e-room")
            worker.terminate()
            returncode = worker.wait_blocking(timeout=90)
            stdout, stderr = worker.stdout, worker.stderr
    assert returncode == 0, stderr
    lines = [json.loads(line) for line in stdout.splitlines() if line.strip()]
    messages = [line["message"] for line in lines]
    assert "starting worker" in messages and "draining worker" in messages
    assert all({"timestamp", "level", "logger", "message"} <= set(line) for line in lines)
    # one line per record: no duplicate handler
    keys = [(line["timestamp"], line["message"], line.get("pid")) for line in lines]
    assert len(keys) == len(set(keys))
    for secret in FAKE_SECRETS.values():
        assert secret not in stdout + stderr
    assert "deprecat" not in (stdout + stderr).lower()
