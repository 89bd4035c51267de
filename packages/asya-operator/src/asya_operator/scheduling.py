"""Pure pieces of the pod that decide where and how the runtime runs: its resources, the pod's
placement (nodeSelector, tolerations, affinity, runtimeClassName) and the warm-up probe.

Each first-class field is merged over the user's pod template, never replacing it whole:

- ``runtime.resources``: key by key in the ``asya-runtime`` container's ``resources``
  (``requests.cpu``; ``requests.memory`` and ``limits.memory``; ``requests`` and ``limits`` of
  the GPU resource); every other key of the template's ``resources`` stays.
- ``scheduling.nodeSelector``: key by key over the template's; ``scheduling.tolerations``: after
  the template's (an identical one only once); ``scheduling.affinity``: each part given
  (``nodeAffinity``, ``podAffinity``, ``podAntiAffinity``) replaces the template's part;
  ``scheduling.runtimeClassName``: over the template's.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import msgspec

from .model import ResourcesSpec, SchedulingSpec

__all__ = [
    "STARTUP_PROBE_PERIOD",
    "place_pod",
    "runtime_resources",
    "startup_probe",
]

STARTUP_PROBE_PERIOD = 5
"""Seconds between the sidecar's startup probes."""


def runtime_resources(base: dict[str, Any], spec: ResourcesSpec) -> dict[str, Any]:
    """The runtime container's ``resources``: the template's, with the spec's keys set over it."""
    out = copy.deepcopy(base)
    requests: dict[str, Any] = dict(out.get("requests", {}))
    limits: dict[str, Any] = dict(out.get("limits", {}))
    if spec.cpu is not None:
        requests["cpu"] = spec.cpu  # no CPU limit: a throttled handler only runs slower
    if spec.memory is not None:
        requests["memory"] = limits["memory"] = spec.memory  # memory is not compressible
    if spec.gpu:
        # Extended resources cannot be overcommitted: the API server wants limits == requests.
        requests[spec.gpu_resource_name] = limits[spec.gpu_resource_name] = str(spec.gpu)
    for key, value in (("requests", requests), ("limits", limits)):
        if value:
            out[key] = value
    return out


def place_pod(pod: dict[str, Any], spec: SchedulingSpec) -> None:
    """Merge ``spec.scheduling`` into a pod spec (the template's copy, edited in place)."""
    if spec.node_selector:
        pod["nodeSelector"] = {**pod.get("nodeSelector", {}), **spec.node_selector}
    if spec.tolerations:
        tolerations = list(pod.get("tolerations", []))
        for toleration in msgspec.to_builtins(spec.tolerations):
            if toleration not in tolerations:
                tolerations.append(toleration)
        pod["tolerations"] = tolerations
    if spec.affinity is not None:
        parts = msgspec.to_builtins(spec.affinity)
        if parts:
            pod["affinity"] = {**pod.get("affinity", {}), **parts}
    if spec.runtime_class_name is not None:
        pod["runtimeClassName"] = spec.runtime_class_name


def startup_probe(startup_timeout: float) -> dict[str, Any]:
    """The sidecar's startup probe: it answers only once the runtime has answered, and it may
    take the whole ``startup_timeout`` (the sidecar's own ``ASYA_RUNTIME_WAIT``) plus one period,
    so the sidecar's own give-up (exit 3, with its reason in the log) comes before the kubelet's.
    Liveness and readiness are not probed until it passes."""
    periods = math.ceil(startup_timeout / STARTUP_PROBE_PERIOD) + 1
    return {
        "httpGet": {"path": "/healthz", "port": "asya-http"},
        "periodSeconds": STARTUP_PROBE_PERIOD,
        "failureThreshold": periods,
    }
