"""deploy/kubernetes: strict decoding against the official API types, offline.

``deploy/kubernetes/validate`` (Go, ``k8s.io/api``) rejects unknown fields, wrong types and
duplicate keys as the API server's strict validation would, and checks the contract with
the image (probes on the health port and path, grace >= drain, non-root, read-only root
with /tmp writable, HPA and PDB aimed at the Deployment). The running image is checked
against the same file in ``tests/test_container.py``.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
MANIFESTS = REPO / "deploy" / "kubernetes"
VALIDATOR = MANIFESTS / "validate"


@pytest.fixture(scope="module")
def validator(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The validator, compiled once (k8s.io/api takes a while; later runs hit Go's cache)."""
    go = shutil.which("go")
    if go is None:
        pytest.fail("the validator needs Go (the machine's, as for livekit-server)")
    binary = tmp_path_factory.mktemp("validate") / "validate"
    subprocess.run([go, "build", "-o", str(binary), "."], cwd=VALIDATOR, check=True, timeout=600)
    return binary


def validate(validator: Path, folder: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(validator), str(folder)], capture_output=True, text=True, timeout=60)


def test_the_committed_manifests_are_valid(validator: Path) -> None:
    result = validate(validator, MANIFESTS)
    assert result.returncode == 0, result.stderr
    assert "manifests OK" in result.stdout


@pytest.mark.parametrize(
    ("old", "new", "complaint"),
    [
        # a misspelt field: silently dropped by a lenient decoder, rejected here
        ("terminationGracePeriodSeconds:", "terminationGracePeriodSecond:", "unknown field"),
        ("replicas: 2", 'replicas: "two"', "replicas"),
        (
            "terminationGracePeriodSeconds: 3660",
            "terminationGracePeriodSeconds: 30",
            "DRAIN_TIMEOUT",
        ),
        ("readOnlyRootFilesystem: true", "readOnlyRootFilesystem: false", "read-only"),
        ("              path: /\n", "              path: /healthz\n", "path"),
    ],
)
def test_a_broken_deployment_is_rejected_with_the_reason(
    validator: Path, tmp_path: Path, old: str, new: str, complaint: str
) -> None:
    for f in MANIFESTS.glob("*.yaml"):
        shutil.copy(f, tmp_path / f.name)
    deployment = tmp_path / "deployment.yaml"
    text = deployment.read_text()
    assert old in text
    deployment.write_text(text.replace(old, new, 1))
    result = validate(validator, tmp_path)
    assert result.returncode == 1
    assert complaint in result.stderr, result.stderr
