"""Pure builders: an ``Asya`` resource in, the Kubernetes objects it needs out.

No I/O here. The controller applies what these return (server-side apply), so whatever they
leave out is removed from the live objects, and calling them twice gives the same objects.
"""

from __future__ import annotations

import copy
import posixpath
from dataclasses import dataclass
from typing import Any

import msgspec

from asya_protocol import DEFAULT_SOCKET_PATH
from asya_protocol.actor_settings import RuntimeSettings, SidecarSettings
from asya_protocol.settings import env_name, render

from .model import (
    GROUP,
    KIND,
    RESERVED_CONTAINER,
    RESERVED_MESSAGE,
    RESERVED_PREFIX,
    RESERVED_VOLUME,
    RUNTIME_CONTAINER,
    VERSION,
    AsyaSpec,
    SecretKeyRef,
    WorkloadKind,
)
from .scheduling import place_pod, runtime_resources, startup_probe

__all__ = [
    "ACTOR_LABEL",
    "KEDA_JOB_LABEL",
    "MANAGED_BY",
    "SIDECAR_HTTP_PORT",
    "SOCKET_DIR",
    "SOCKET_PATH",
    "Actor",
    "desired_objects",
    "scaled_job",
    "scaled_object",
    "sidecar_container",
    "sidecar_env",
    "trigger_authentication",
    "workload",
]

ACTOR_LABEL = "asya.sh/actor"
KEDA_JOB_LABEL = "scaledjob.keda.sh/name"  # KEDA labels the Jobs of a ScaledJob with its name
MANAGED_BY = {"app.kubernetes.io/managed-by": "asya-operator"}
SOCKET_PATH = DEFAULT_SOCKET_PATH
SOCKET_DIR = posixpath.dirname(SOCKET_PATH)  # the shared emptyDir, mounted in both containers
HANDLER_DIR = "/opt/asya/handler"
SIDECAR_HTTP_PORT = 8080
JOB_IDLE_EXIT = 30.0  # a Job's sidecar exits (and the Job completes) after this many idle seconds
SIDECAR_UID = 10001
SHARED_GID = 10001


@dataclass(frozen=True)
class Actor:
    """An Asya resource, decoded: what every builder needs."""

    name: str
    namespace: str
    uid: str
    generation: int
    spec: AsyaSpec

    @classmethod
    def from_resource(cls, obj: dict[str, Any]) -> Actor:
        """Raises ``msgspec.ValidationError`` for a spec the model refuses."""
        meta = obj["metadata"]
        spec = msgspec.convert(obj.get("spec", {}), AsyaSpec)
        if spec.queue is None and meta["name"].startswith(RESERVED_PREFIX):
            raise msgspec.ValidationError(
                f"the queue defaults to the resource's name {meta['name']!r}, and "
                f"{RESERVED_MESSAGE}: set spec.queue"
            )
        return cls(
            name=meta["name"],
            namespace=meta["namespace"],
            uid=meta.get("uid", ""),
            generation=int(meta.get("generation", 0)),
            spec=spec,
        )

    @property
    def queue(self) -> str:
        return self.spec.queue or self.name

    @property
    def labels(self) -> dict[str, str]:
        return {ACTOR_LABEL: self.name, "app.kubernetes.io/name": self.name, **MANAGED_BY}

    def meta(self, name: str | None = None) -> dict[str, Any]:
        return {
            "name": name or self.name,
            "namespace": self.namespace,
            "labels": self.labels,
            "ownerReferences": [
                {
                    "apiVersion": f"{GROUP}/{VERSION}",
                    "kind": KIND,
                    "name": self.name,
                    "uid": self.uid,
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        }


def _sidecar_env(path: str, value: object) -> dict[str, str]:
    """One variable of the sidecar's env, named and written by its settings schema."""
    name, text = render(SidecarSettings, path, value)
    return {"name": name, "value": text}


def _secret_env(path: str, ref: SecretKeyRef) -> dict[str, Any]:
    name = env_name(SidecarSettings, path)
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}}}


def sidecar_env(actor: Actor) -> list[dict[str, Any]]:
    """The sidecar's env before ``sidecar.env`` overrides: the spec in the sidecar's own terms."""
    s = actor.spec
    env = [
        _sidecar_env("actor", actor.queue),
        _secret_env("rabbitmq_url", s.transport.url_secret_ref),
        _sidecar_env("exchange", s.transport.exchange),
        _sidecar_env("socket_path", SOCKET_PATH),
        _sidecar_env("runtime_timeout", s.runtime.timeout),
        _sidecar_env("runtime_wait", s.runtime.startup_timeout),
        _sidecar_env("happy_end", s.transport.happy_end),
        _sidecar_env("error_end", s.transport.error_end),
        _sidecar_env("concurrency", s.runtime.concurrency),
        _sidecar_env("retry.max_attempts", s.retry.max_attempts),
        _sidecar_env("retry.base_delay", s.retry.base_delay),
        _sidecar_env("retry.max_delay", s.retry.max_delay),
        _sidecar_env("retry.codes", s.retry.codes),
        _sidecar_env("redelivery_limit", s.retry.redelivery_limit),
        _sidecar_env("shutdown_grace", s.runtime.shutdown_grace),
        _sidecar_env("http_port", SIDECAR_HTTP_PORT),
    ]
    if s.workload.kind is WorkloadKind.JOB:
        env.append(_sidecar_env("exit_when_idle", JOB_IDLE_EXIT))
    return env


def sidecar_container(actor: Actor) -> dict[str, Any]:
    s = actor.spec
    env = sidecar_env(actor)
    # sidecar.env adds variables and overrides the operator's (one definition of each name)
    override = {e.get("name") for e in s.sidecar.env}
    env = [e for e in env if e["name"] not in override] + copy.deepcopy(s.sidecar.env)
    container: dict[str, Any] = {
        "name": RESERVED_CONTAINER,
        "image": s.sidecar.image,
        "imagePullPolicy": s.sidecar.image_pull_policy,
        "env": env,
        "ports": [{"name": "asya-http", "containerPort": SIDECAR_HTTP_PORT, "protocol": "TCP"}],
        "volumeMounts": [{"name": RESERVED_VOLUME, "mountPath": SOCKET_DIR}],
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": SIDECAR_UID,
            "runAsGroup": SHARED_GID,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
    }
    if s.workload.kind is not WorkloadKind.JOB:
        container["startupProbe"] = startup_probe(s.runtime.startup_timeout)
        container["livenessProbe"] = {
            "httpGet": {"path": "/healthz", "port": "asya-http"},
            "periodSeconds": 10,
            "failureThreshold": 3,
        }
        container["readinessProbe"] = {
            "httpGet": {"path": "/readyz", "port": "asya-http"},
            "periodSeconds": 5,
        }
    if s.sidecar.resources:
        container["resources"] = copy.deepcopy(s.sidecar.resources)
    return container


def _runtime_container(actor: Actor, container: dict[str, Any]) -> dict[str, Any]:
    s = actor.spec
    out = copy.deepcopy(container)
    wanted = dict(
        render(RuntimeSettings, path, value)
        for path, value in (
            ("socket_path", SOCKET_PATH),
            ("mode", s.handler_mode),
            ("concurrency", s.runtime.concurrency),
            ("shutdown_grace", s.runtime.shutdown_grace),
            # The same timeout as the sidecar's: past it a handler is cancelled or stuck.
            ("runtime_timeout", s.runtime.timeout),
        )
    )
    handler = env_name(RuntimeSettings, "handler")
    if s.handler:
        wanted[handler] = s.handler
    if s.handler_script is not None:
        module = s.handler_script.key.removesuffix(".py")
        wanted.setdefault(handler, f"{module}:handler")
        wanted["PYTHONPATH"] = HANDLER_DIR
    env = [e for e in out.get("env", []) if e.get("name") not in wanted]
    out["env"] = env + [{"name": k, "value": v} for k, v in wanted.items()]
    mounts = [m for m in out.get("volumeMounts", []) if m.get("name") != RESERVED_VOLUME]
    mounts.append({"name": RESERVED_VOLUME, "mountPath": SOCKET_DIR})
    if s.handler_script is not None:
        mounts.append({"name": "asya-handler", "mountPath": HANDLER_DIR, "readOnly": True})
    out["volumeMounts"] = mounts
    resources = runtime_resources(out.get("resources", {}), s.runtime.resources)
    if resources:
        out["resources"] = resources
    return out


def _pod_template(actor: Actor) -> dict[str, Any]:
    s = actor.spec
    template = copy.deepcopy(s.workload.template)
    meta = template.setdefault("metadata", {})
    meta["labels"] = {**meta.get("labels", {}), **actor.labels}
    pod = template.setdefault("spec", {})
    containers = [
        _runtime_container(actor, c) if c.get("name") == RUNTIME_CONTAINER else c
        for c in pod.get("containers", [])
    ]
    sidecar = sidecar_container(actor)
    if s.workload.kind is WorkloadKind.JOB:
        # The runtime becomes a native sidecar (restartPolicy Always init container), so the
        # Job completes when the queue consumer exits on an idle queue.
        runtime = [c for c in containers if c.get("name") == RUNTIME_CONTAINER]
        others = [c for c in containers if c.get("name") != RUNTIME_CONTAINER]
        pod["initContainers"] = [
            *pod.get("initContainers", []),
            *({**c, "restartPolicy": "Always"} for c in runtime),
        ]
        pod["containers"] = [*others, sidecar]
        pod.setdefault("restartPolicy", "OnFailure")
    else:
        pod["containers"] = [*containers, sidecar]
    volumes = list(pod.get("volumes", []))
    volumes.append({"name": RESERVED_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}})
    if s.handler_script is not None:
        volumes.append(
            {
                "name": "asya-handler",
                "configMap": {
                    "name": s.handler_script.config_map,
                    "items": [{"key": s.handler_script.key, "path": s.handler_script.key}],
                },
            }
        )
    pod["volumes"] = volumes
    place_pod(pod, s.scheduling)
    security = pod.setdefault("securityContext", {})
    security.setdefault("fsGroup", SHARED_GID)  # the socket's group: runtime and sidecar share it
    pod.setdefault("terminationGracePeriodSeconds", int(s.runtime.shutdown_grace) + 10)
    return template


def workload(actor: Actor) -> dict[str, Any]:
    s = actor.spec
    kind = s.workload.kind
    selector = {"matchLabels": {ACTOR_LABEL: actor.name}}
    template = _pod_template(actor)
    if kind is WorkloadKind.JOB:
        return {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": actor.meta(),
            "spec": {
                "parallelism": s.workload.replicas,
                "backoffLimit": 6,
                "template": template,
            },
        }
    spec: dict[str, Any] = {"selector": selector, "template": template}
    if not s.scaling.enabled:
        spec["replicas"] = s.workload.replicas  # with KEDA, the HPA owns the replica count
    if kind is WorkloadKind.STATEFUL_SET:
        spec["serviceName"] = f"{actor.name}-headless"
        if s.workload.volume_claim_templates:
            spec["volumeClaimTemplates"] = copy.deepcopy(s.workload.volume_claim_templates)
    return {"apiVersion": "apps/v1", "kind": kind.value, "metadata": actor.meta(), "spec": spec}


def headless_service(actor: Actor) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": actor.meta(f"{actor.name}-headless"),
        "spec": {
            "clusterIP": "None",
            "selector": {ACTOR_LABEL: actor.name},
            "ports": [{"name": "asya-http", "port": SIDECAR_HTTP_PORT, "targetPort": "asya-http"}],
        },
    }


def _trigger(actor: Actor) -> dict[str, Any]:
    s = actor.spec
    http = s.transport.management_url_secret_ref is not None
    return {
        "type": "rabbitmq",
        "metadata": {
            "protocol": "http" if http else "amqp",
            "mode": "QueueLength",
            "value": str(s.scaling.queue_length),
            "activationValue": str(s.scaling.activation_queue_length),
            "queueName": actor.queue,
        },
        "authenticationRef": {"name": f"{actor.name}-rabbitmq"},
    }


def trigger_authentication(actor: Actor) -> dict[str, Any]:
    s = actor.spec
    ref = s.transport.management_url_secret_ref or s.transport.url_secret_ref
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "TriggerAuthentication",
        "metadata": actor.meta(f"{actor.name}-rabbitmq"),
        "spec": {"secretTargetRef": [{"parameter": "host", "name": ref.name, "key": ref.key}]},
    }


def scaled_object(actor: Actor) -> dict[str, Any]:
    s = actor.spec
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": actor.meta(),
        "spec": {
            "scaleTargetRef": {
                "apiVersion": "apps/v1",
                "kind": s.workload.kind.value,
                "name": actor.name,
            },
            "minReplicaCount": s.scaling.min_replicas,
            "maxReplicaCount": s.scaling.max_replicas,
            "pollingInterval": s.scaling.polling_interval,
            "cooldownPeriod": s.scaling.cooldown_period,
            "triggers": [_trigger(actor)],
        },
    }


def scaled_job(actor: Actor) -> dict[str, Any]:
    s = actor.spec
    job = workload(actor)
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledJob",
        "metadata": actor.meta(),
        "spec": {
            "jobTargetRef": job["spec"],
            "minReplicaCount": s.scaling.min_replicas,
            "maxReplicaCount": s.scaling.max_replicas,
            "pollingInterval": s.scaling.polling_interval,
            "successfulJobsHistoryLimit": 5,
            "failedJobsHistoryLimit": 5,
            "triggers": [_trigger(actor)],
        },
    }


def desired_objects(actor: Actor) -> list[dict[str, Any]]:
    """Everything the actor needs, in apply order."""
    s = actor.spec
    kind = s.workload.kind
    objects: list[dict[str, Any]] = []
    if kind is WorkloadKind.STATEFUL_SET:
        objects.append(headless_service(actor))
    if kind is WorkloadKind.JOB and s.scaling.enabled:
        objects += [trigger_authentication(actor), scaled_job(actor)]  # KEDA creates the Jobs
        return objects
    objects.append(workload(actor))
    if s.scaling.enabled:
        objects += [trigger_authentication(actor), scaled_object(actor)]
    return objects
