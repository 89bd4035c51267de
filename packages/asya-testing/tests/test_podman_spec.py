"""The pod-spec translation of ``asya_testing.podman``: what it maps, and what it refuses."""

from __future__ import annotations

from typing import Any

import pytest

from asya_testing.podman import UnsupportedPodSpec, _env, _size_blocks, run_pod, security_args


def test_env_values_and_secrets() -> None:
    container = {
        "name": "c",
        "env": [
            {"name": "PLAIN", "value": "1"},
            {"name": "EMPTY"},  # as the API server stores value: ""
            {"name": "URL", "valueFrom": {"secretKeyRef": {"name": "s", "key": "url"}}},
        ],
    }
    assert _env(container, {("s", "url"): "amqp://x"}) == ["PLAIN=1", "EMPTY=", "URL=amqp://x"]


def test_a_missing_secret_is_named() -> None:
    container = {
        "name": "c",
        "env": [{"name": "URL", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}],
    }
    with pytest.raises(UnsupportedPodSpec, match="env URL: no secret s/k"):
        _env(container, {})


def test_field_refs_to_the_pods_name_and_namespace() -> None:
    container = {
        "name": "c",
        "env": [
            {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        ],
    }
    fields = {"metadata.name": "p-1", "metadata.namespace": "ns"}
    assert _env(container, {}, fields) == ["POD=p-1", "NS=ns"]


def test_other_env_sources_are_refused() -> None:
    container = {
        "name": "c",
        "env": [{"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
    }
    with pytest.raises(UnsupportedPodSpec, match="env IP"):
        _env(container, {})


@pytest.mark.parametrize(
    ("limit", "expected"),
    [
        (None, ""),
        ("1Mi", ",nr_blocks=256"),
        ("64Ki", ",nr_blocks=16"),
        ("1M", ",nr_blocks=245"),
        ("10", ",nr_blocks=1"),
    ],
)
def test_size_limit_as_pages(limit: str | None, expected: str) -> None:
    assert _size_blocks(limit) == expected


def test_security_context_maps_to_podman_flags() -> None:
    container: dict[str, Any] = {
        "name": "asya-sidecar",
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 10001,
            "runAsGroup": 10001,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
    }
    args = security_args(container, {"fsGroup": 10001}, "unused:image")
    assert args == [
        "--user", "10001:10001",
        "--group-add", "10001",
        "--read-only", "--read-only-tmpfs=false",
        "--security-opt", "no-new-privileges",
        "--cap-drop", "ALL",
    ]  # fmt: skip


def test_run_as_non_root_refuses_root() -> None:
    container = {"name": "c", "securityContext": {"runAsNonRoot": True, "runAsUser": 0}}
    with pytest.raises(UnsupportedPodSpec, match="runs as root"):
        security_args(container, {}, "unused:image")


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ({"initContainers": [{"name": "i"}], "containers": []}, "initContainers"),
        (
            {"containers": [], "volumes": [{"name": "v", "hostPath": {"path": "/"}}]},
            "volume v: only emptyDir and configMap",
        ),
        (
            {"containers": [], "volumes": [{"name": "v", "configMap": {"name": "absent"}}]},
            "no ConfigMap absent",
        ),
        (
            {"containers": [{"name": "c", "volumeMounts": [{"name": "x", "mountPath": "/x"}]}]},
            "c: mounts undeclared volume x",
        ),
    ],
)
def test_unsupported_specs_are_refused_before_anything_runs(
    spec: dict[str, Any], match: str
) -> None:
    # No podman command runs before the check: these pass on a machine without podman.
    with pytest.raises(UnsupportedPodSpec, match=match):
        run_pod("asya-unit-refused", spec)
