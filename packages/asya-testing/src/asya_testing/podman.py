"""Kubernetes pods as podman pods: run what the operator and the chart generate, in containers.

``run_pod`` takes a pod spec exactly as a Deployment's template carries it and runs it the way a
kubelet would, as far as one host allows: one podman pod (its own network namespace), the
containers with their image, command, args and environment (``value`` and ``secretKeyRef``),
``emptyDir`` volumes as pod-local volumes shared by the containers (``medium: Memory`` as tmpfs),
``configMap`` volumes as read-only files, the security context (user, group, ``fsGroup``,
read-only root filesystem, dropped capabilities, no privilege escalation, and ``runAsNonRoot``
checked against the image the way the kubelet refuses a non-numeric or root user). Declared
container ports are published on 127.0.0.1 so the test can probe them. What it cannot honour
it refuses with ``UnsupportedPodSpec`` rather than silently ignoring.

Pods reach the host's loopback services at ``HOST_LOOPBACK`` (slirp4netns with
``allow_host_loopback``), so the test's RabbitMQ and PostgreSQL can stay bound to 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .processes import free_port
from .services import unavailable

__all__ = [
    "HOST_LOOPBACK",
    "Pod",
    "PodmanError",
    "UnsupportedPodSpec",
    "podman",
    "podman_service",
    "require_images",
    "run_pod",
    "security_args",
]

HOST_LOOPBACK = "10.0.2.2"
NETWORK = "slirp4netns:allow_host_loopback=true"
_FIELDS = {"metadata.name": "", "metadata.namespace": ""}  # what fieldRef may name


class PodmanError(RuntimeError):
    """A podman command failed; the message carries the command and its stderr."""


class UnsupportedPodSpec(ValueError):
    """The pod spec uses something ``run_pod`` cannot reproduce faithfully."""


def podman(*args: str, timeout: float = 120.0, check: bool = True) -> str:
    """Run ``podman args...`` and return its stdout; raise ``PodmanError`` when it fails."""
    proc = subprocess.run(  # noqa: S603 - fixed executable, arguments built here
        ["podman", *args],  # noqa: S607 - podman from PATH, like the kubelet's runtime
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check and proc.returncode != 0:
        raise PodmanError(
            f"podman {' '.join(args)} exited {proc.returncode}: {proc.stderr.strip()}"
        )
    return proc.stdout


def require_images(*images: str) -> None:
    """Skip (fail under CI) unless podman and every image are here; names what is missing."""
    if shutil.which("podman") is None:
        unavailable("podman is not installed (bash scripts/images.sh installs it)")
    if os.getuid() != 0:
        unavailable("the container tests need rootful podman (run as root)")
    missing = [i for i in images if not _exists(i)]
    if missing:
        unavailable(f"images not built: {', '.join(missing)} (run: bash scripts/images.sh)")


def _exists(image: str) -> bool:
    return (
        subprocess.run(  # noqa: S603
            ["podman", "image", "exists", image],  # noqa: S607
            capture_output=True,
            timeout=30,
            check=False,
        ).returncode
        == 0
    )


def _image_user(image: str) -> str:
    raw = podman("image", "inspect", "--format", "{{json .Config.User}}", image)
    user: str = json.loads(raw) or ""
    return user


@dataclass
class Pod:
    """A running podman pod made from a Kubernetes pod spec. ``remove()`` deletes everything."""

    name: str
    containers: dict[str, str] = field(default_factory=dict)  # Kubernetes name -> podman name
    ports: dict[tuple[str, int | str], int] = field(default_factory=dict)  # (container, port)
    volumes: list[str] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)
    probes: list[tuple[str, str, int | str]] = field(default_factory=list)  # container, path, port

    def host_port(self, container: str, port: int | str) -> int:
        """The 127.0.0.1 port where ``container``'s port (number or name) is published."""
        return self.ports[(container, port)]

    def stop(self, container: str, timeout: int = 30) -> None:
        """SIGTERM, then SIGKILL after ``timeout`` s: what the kubelet does to a container."""
        podman("stop", "--time", str(timeout), self.containers[container], timeout=timeout + 30)

    def start(self, container: str) -> None:
        """Start a stopped container again (the kubelet's restart)."""
        podman("start", self.containers[container])

    def running(self, container: str) -> bool:
        state = podman("inspect", "--format", "{{.State.Running}}", self.containers[container])
        return state.strip() == "true"

    def exit_code(self, container: str) -> int:
        return int(podman("inspect", "--format", "{{.State.ExitCode}}", self.containers[container]))

    def logs(self, container: str) -> str:
        proc = subprocess.run(  # noqa: S603
            ["podman", "logs", self.containers[container]],  # noqa: S607
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        return proc.stdout + proc.stderr

    def all_logs(self) -> str:
        return "\n".join(f"--- {name}\n{self.logs(name)}" for name in self.containers)

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Wait until every container's HTTP readiness probe answers 200 through its published
        port; raise ``TimeoutError`` with the pod's logs otherwise."""
        deadline = time.monotonic() + timeout
        for container, path, port in self.probes:
            url = f"http://127.0.0.1:{self.host_port(container, port)}{path}"
            while True:
                try:
                    with urllib.request.urlopen(url, timeout=2) as response:
                        if response.status == 200:
                            break
                except (urllib.error.URLError, OSError):
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{self.name}/{container} not ready:\n{self.all_logs()}")
                time.sleep(0.2)

    def remove(self) -> None:
        podman("pod", "rm", "--force", "--time", "5", self.name, check=False, timeout=120)
        for volume in self.volumes:
            podman("volume", "rm", "--force", volume, check=False)
        for path in self.files:
            shutil.rmtree(path, ignore_errors=True)


def _env(
    container: dict[str, Any],
    secrets: Mapping[tuple[str, str], str],
    fields: Mapping[str, str] | None = None,
) -> list[str]:
    """``NAME=value`` items: plain values, ``secretKeyRef`` from ``secrets``, ``fieldRef`` from
    ``fields`` (the pod's ``metadata.name`` and ``metadata.namespace``)."""
    fields = fields or {}
    out = []
    for item in container.get("env", []):
        name = item["name"]
        if "valueFrom" not in item:  # the API server omits an empty value
            out.append(f"{name}={item.get('value', '')}")
            continue
        source = item["valueFrom"]
        if "fieldRef" in source and source["fieldRef"].get("fieldPath") in fields:
            out.append(f"{name}={fields[source['fieldRef']['fieldPath']]}")
            continue
        ref = source.get("secretKeyRef")
        if ref is None:
            raise UnsupportedPodSpec(
                f"env {name}: only value, secretKeyRef and fieldRef to {sorted(fields)}"
            )
        key = (ref["name"], ref["key"])
        if key not in secrets:
            raise UnsupportedPodSpec(f"env {name}: no secret {ref['name']}/{ref['key']} given")
        out.append(f"{name}={secrets[key]}")
    return out


def security_args(container: dict[str, Any], pod_security: dict[str, Any], image: str) -> list[str]:
    """podman flags for a container's (and its pod's) security context; refuses what the
    kubelet would refuse under ``runAsNonRoot``."""
    security = {**pod_security, **container.get("securityContext", {})}
    args: list[str] = []
    uid = security.get("runAsUser")
    gid = security.get("runAsGroup")
    if uid is not None:
        args += ["--user", f"{uid}:{gid}" if gid is not None else str(uid)]
    if security.get("runAsNonRoot"):
        user = str(uid) if uid is not None else _image_user(image).split(":")[0]
        if not user.isdigit():
            raise UnsupportedPodSpec(
                f"{container['name']}: runAsNonRoot and image {image} has non-numeric user "
                f"{user!r}: the kubelet refuses to start it"
            )
        if int(user) == 0:
            raise UnsupportedPodSpec(f"{container['name']}: runAsNonRoot and image runs as root")
    if (fs_group := pod_security.get("fsGroup")) is not None:
        args += ["--group-add", str(fs_group)]
    if security.get("readOnlyRootFilesystem"):
        args += ["--read-only", "--read-only-tmpfs=false"]
    if security.get("allowPrivilegeEscalation") is False:
        args += ["--security-opt", "no-new-privileges"]
    for cap in security.get("capabilities", {}).get("drop", []):
        args += ["--cap-drop", cap]
    for cap in security.get("capabilities", {}).get("add", []):
        args += ["--cap-add", cap]
    return args


def _size_blocks(limit: str | None) -> str:
    """An emptyDir sizeLimit ("1Mi", "64Ki", "1G") as tmpfs ``nr_blocks`` of 4 KiB pages."""
    if not limit:
        return ""
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "K": 10**3, "M": 10**6, "G": 10**9}
    for suffix, factor in units.items():
        if limit.endswith(suffix):
            size = int(float(limit.removesuffix(suffix)) * factor)
            break
    else:
        size = int(limit)
    return f",nr_blocks={max(1, -(-size // 4096))}"


def _container_ports(pod_spec: dict[str, Any]) -> dict[tuple[str, int | str], int]:
    ports: dict[tuple[str, int | str], int] = {}
    for c in pod_spec["containers"]:
        for p in c.get("ports", []):
            ports[(c["name"], p["containerPort"])] = p["containerPort"]
            if "name" in p:
                ports[(c["name"], p["name"])] = p["containerPort"]
    return ports


def _check(
    pod_spec: dict[str, Any],
    secrets: Mapping[tuple[str, str], str],
    config_maps: Mapping[str, Mapping[str, str]],
) -> None:
    """Refuse what cannot be reproduced, before anything is created."""
    if pod_spec.get("initContainers"):
        raise UnsupportedPodSpec("initContainers are not supported")
    volumes = set()
    for volume in pod_spec.get("volumes", []):
        vname = volume["name"]
        if "configMap" in volume:
            if volume["configMap"]["name"] not in config_maps:
                raise UnsupportedPodSpec(
                    f"volume {vname}: no ConfigMap {volume['configMap']['name']} given"
                )
        elif "emptyDir" not in volume:
            raise UnsupportedPodSpec(f"volume {vname}: only emptyDir and configMap")
        volumes.add(vname)
    for c in pod_spec["containers"]:
        _env(c, secrets, _FIELDS)
        for m in c.get("volumeMounts", []):
            if m["name"] not in volumes:
                raise UnsupportedPodSpec(f"{c['name']}: mounts undeclared volume {m['name']}")


def run_pod(
    name: str,
    pod_spec: dict[str, Any],
    *,
    images: Mapping[str, str] | None = None,
    secrets: Mapping[tuple[str, str], str] | None = None,
    config_maps: Mapping[str, Mapping[str, str]] | None = None,
    env_overrides: Mapping[str, Mapping[str, str]] | None = None,
    host_mounts: Mapping[str, Sequence[tuple[Path, str]]] | None = None,
    namespace: str = "default",
    network: str = NETWORK,
) -> Pod:
    """Create and start a pod from ``pod_spec`` (a pod template's ``spec``).

    ``images`` renames images (as a registry mirror would), ``secrets`` maps (secret, key) to a
    value, ``config_maps`` maps a ConfigMap's name to its data; ``fieldRef`` env gets the pod's
    name and ``namespace``. ``env_overrides`` (container -> name -> value) and ``host_mounts``
    (container -> read-only (host directory, path)) stand in for what a kubelet would inject,
    such as a service account's credentials, and nothing else. ``network="host"`` shares the
    host's network (ports are then not published: they are the host's own).
    On failure everything created so far is removed.
    """
    images = images or {}
    secrets = secrets or {}
    config_maps = config_maps or {}
    env_overrides = env_overrides or {}
    _check(pod_spec, secrets, config_maps)
    pod = Pod(name=name)
    try:
        publish: list[str] = []
        if network == "host":
            pod.ports = _container_ports(pod_spec)
        else:
            for (container, port), number in _container_ports(pod_spec).items():
                if isinstance(port, int):
                    host = pod.ports[(container, port)] = free_port()
                    publish += ["--publish", f"127.0.0.1:{host}:{number}"]
            for (container, port), number in _container_ports(pod_spec).items():
                if isinstance(port, str):  # a port's name: the same host port as its number
                    pod.ports[(container, port)] = pod.ports[(container, number)]
        podman("pod", "create", "--name", name, "--network", network, *publish)

        pod_security = pod_spec.get("securityContext", {})
        fs_group = pod_security.get("fsGroup")
        mounts: dict[str, str] = {}  # volume name -> podman volume or host directory
        for volume in pod_spec.get("volumes", []):
            vname = volume["name"]
            if "emptyDir" in volume:
                opts = volume["emptyDir"] or {}
                source = f"{name}-{vname}"
                create = ["volume", "create"]
                if opts.get("medium") == "Memory":
                    o = "mode=2770" if fs_group is not None else "mode=0777"
                    if fs_group is not None:
                        o += f",gid={fs_group}"
                    o += _size_blocks(opts.get("sizeLimit"))
                    create += ["--opt", "type=tmpfs", "--opt", "device=tmpfs", "--opt", f"o={o}"]
                podman(*create, source)
                pod.volumes.append(source)
                mounts[vname] = source
            else:  # a configMap (checked above)
                ref = volume["configMap"]
                data = config_maps[ref["name"]]
                folder = Path(tempfile.mkdtemp(prefix=f"{name}-{vname}-"))
                pod.files.append(folder)
                items = ref.get("items") or [{"key": k, "path": k} for k in data]
                for item in items:
                    target = folder / item["path"]
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_text(data[item["key"]])
                    target.chmod(0o644)
                folder.chmod(0o755)
                mounts[vname] = str(folder)

        for c in pod_spec["containers"]:
            image = images.get(c["image"], c["image"])
            cname = f"{name}-{c['name']}"
            args = ["--pod", name, "--name", cname, "--pull", "never"]
            env = _env(c, secrets, {"metadata.name": name, "metadata.namespace": namespace})
            env += [f"{k}={v}" for k, v in env_overrides.get(c["name"], {}).items()]
            for host_dir, path in (host_mounts or {}).get(c["name"], []):
                args += ["--volume", f"{host_dir}:{path}:ro"]
            for item in env:
                args += ["--env", item]
            for m in c.get("volumeMounts", []):
                mode = "ro" if m.get("readOnly") else "rw"
                args += ["--volume", f"{mounts[m['name']]}:{m['mountPath']}:{mode}"]
            args += security_args(c, pod_security, image)
            if "command" in c:
                args += ["--entrypoint", json.dumps(c["command"])]
            args += [image, *c.get("args", [])]
            podman("create", *args)
            pod.containers[c["name"]] = cname
            probe = c.get("readinessProbe", {}).get("httpGet")
            if probe is not None:
                pod.probes.append((c["name"], probe.get("path", "/"), probe["port"]))
        podman("pod", "start", name)
    except BaseException:
        pod.remove()
        raise
    return pod


@contextmanager
def podman_service(directory: Path, timeout: float = 30.0) -> Iterator[str]:
    """``podman system service`` on a Unix socket in ``directory``; yields its ``DOCKER_HOST``.

    A Docker-compatible API: the docker SDK and testcontainers talk to it as to a Docker engine.
    """
    sock = directory / "podman.sock"
    log = (directory / "podman-service.log").open("wb")
    proc = subprocess.Popen(  # noqa: S603
        ["podman", "system", "service", "--time", "0", f"unix://{sock}"],  # noqa: S607
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + timeout
        while not sock.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise PodmanError(
                    f"podman system service did not start: "
                    f"{(directory / 'podman-service.log').read_text(errors='replace')}"
                )
            time.sleep(0.05)
        yield f"unix://{sock}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)
        log.close()
