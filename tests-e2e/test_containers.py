"""The images scripts/images.sh builds, checked as built: the operator image prints the
committed CRD, every image runs as a numeric non-root user and installs exactly the locked
versions. They run as pods on a real kubelet in tests-e2e/cluster/.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from pathlib import Path

import pytest

from asya_testing.podman import podman, require_images

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "deploy/helm/asya"


def version(package: str) -> str:
    about = ROOT / "packages" / package / "src" / package.replace("-", "_") / "__about__.py"
    found = re.search(r'__version__ = "(.+)"', about.read_text())
    assert found is not None
    return found.group(1)


IMAGES = {c: f"localhost/{c}:{version(c)}" for c in ("asya-sidecar", "asya-gateway")}
SEED_IMAGE = f"localhost/asya-seed:{version('asya-runtime')}"
RUNTIME_IMAGE = f"localhost/asya-runtime:{version('asya-runtime')}"
OPERATOR_IMAGE = f"localhost/asya-operator:{version('asya-operator')}"


@pytest.fixture(scope="module")
def images() -> None:
    require_images(*IMAGES.values(), SEED_IMAGE, RUNTIME_IMAGE, OPERATOR_IMAGE)


@pytest.fixture(scope="module")
def operator_crd(images: None) -> str:
    return podman("run", "--rm", "--network", "none", OPERATOR_IMAGE, "crd")


def test_operator_image_generates_the_committed_crd(operator_crd: str) -> None:
    committed = (CHART / "crds/asyas.asya.sh.yaml").read_text()
    assert operator_crd == committed


@pytest.mark.parametrize("image", [*IMAGES.values(), RUNTIME_IMAGE, OPERATOR_IMAGE, SEED_IMAGE])
def test_image_runs_as_numeric_non_root_user(images: None, image: str) -> None:
    user = json.loads(podman("image", "inspect", "--format", "{{json .Config.User}}", image))
    uid = user.split(":")[0]
    assert uid.isdigit()
    assert int(uid) != 0
    assert (
        podman("run", "--rm", "--network", "none", "--entrypoint", "id", image, "-u").strip() == uid
    )


_LISTED = (
    "import importlib.metadata as m, json; "
    "print(json.dumps({d.metadata['Name']: d.version for d in m.distributions()}))"
)
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([^\s;]+)", re.MULTILINE)


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@pytest.mark.parametrize("image", [*IMAGES.values(), RUNTIME_IMAGE, OPERATOR_IMAGE, SEED_IMAGE])
def test_image_installs_exactly_the_locked_versions(images: None, image: str) -> None:
    """Every third-party distribution in the image is at a version requirements/lock.txt pins."""
    pins: dict[str, set[str]] = {}
    for name, pinned in _PIN.findall((ROOT / "requirements/lock.txt").read_text()):
        pins.setdefault(_normal(name), set()).add(pinned)
    installed = json.loads(
        podman("run", "--rm", "--network", "none", "--entrypoint", "python3", image, "-c", _LISTED)
    )
    names = {_normal(n): v for n, v in installed.items()}
    third_party = {n: v for n, v in names.items() if not n.startswith("asya-")}
    assert third_party, "no third-party distribution found: nothing was checked"
    unlocked = {n: v for n, v in third_party.items() if v not in pins.get(n, set())}
    assert not unlocked, f"{image} has versions the lock does not pin: {unlocked}"


ALL_IMAGES = [*IMAGES.values(), RUNTIME_IMAGE, OPERATOR_IMAGE, SEED_IMAGE]


@pytest.mark.parametrize("image", ALL_IMAGES)
def test_pid_1_is_tini(images: None, image: str) -> None:
    """The kernel drops a signal sent to a PID 1 that has no handler for it: an init (tini)
    is PID 1 and forwards SIGTERM to the component, whatever moment of its start it is at."""
    entrypoint = json.loads(
        podman("image", "inspect", "--format", "{{json .Config.Entrypoint}}", image)
    )
    assert entrypoint[:4] == ["/usr/bin/tini", "-e", "143", "--"], entrypoint
    pid_1 = podman(
        "run", "--rm", "--network", "none", image, "-h" if image != OPERATOR_IMAGE else "crd"
    )
    assert pid_1  # the component behind tini still runs and prints


# A container stopped at these moments after `podman run -d` returns (and the command it runs).
_STARTS = {
    "seed-runtime": (SEED_IMAGE, ["--env", "ASYA_HANDLER=handlers:preprocess"]),
    "sidecar-waiting-for-its-runtime": (IMAGES["asya-sidecar"], ["--env", "ASYA_ACTOR_NAME=sig"]),
    "operator-without-its-api-server": (
        OPERATOR_IMAGE,
        [
            *("--env", "KUBECONFIG=/kube/config", "--env", "ASYA_LEADER_ELECTION=false"),
            *("--env", "ASYA_RABBITMQ_URL=amqp://a:b@127.0.0.1:1/"),
        ],
    ),
}
_UNREACHABLE_KUBECONFIG = """apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:1"}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: x, context: {cluster: c, user: u}}]
current-context: x
"""


@pytest.mark.parametrize("moment", [0.0, 0.02, 0.1, 0.3, 1.0, 3.0])
@pytest.mark.parametrize("start", sorted(_STARTS))
def test_sigterm_at_any_moment_of_start_stops_the_container_with_0(
    images: None, start: str, moment: float, tmp_path: Path
) -> None:
    image, options = _STARTS[start]
    if start.startswith("operator"):
        kubeconfig = tmp_path / "config"
        kubeconfig.write_text(_UNREACHABLE_KUBECONFIG)
        kubeconfig.chmod(0o644)
        options = [*options, "--volume", f"{kubeconfig}:/kube/config:ro,Z"]
    name = f"asya-sig-{uuid.uuid4().hex[:10]}"
    podman("run", "-d", "--name", name, "--network", "none", *options, image)
    try:
        started = time.monotonic()
        time.sleep(max(0.0, started + moment - time.monotonic()))
        podman("kill", "--signal", "TERM", name)
        code = podman("wait", name, timeout=10).strip()
        assert time.monotonic() - started < moment + 8
        assert code == "0", podman("logs", name)
    finally:
        podman("rm", "--force", "--time", "0", name, check=False)
