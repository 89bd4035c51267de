"""The ``Asya`` custom resource (``asyas.asya.sh/v1alpha1``), defined once, here.

The CRD's OpenAPI schema is generated from these types (:mod:`asya_operator.crd`), and the
operator decodes resources with them, so the two can never disagree. Field docs become the
schema's descriptions; ``Meta`` bounds become minimums and maximums; defaults become defaults.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

import msgspec
from msgspec import Meta

from asya_protocol import (
    ERROR_CODE_PATTERN,
    MAX_QUEUE_NAME_BYTES,
    QUEUE_NAME_PATTERN,
    RESERVED_QUEUE_PREFIX,
    HandlerMode,
)

__all__ = [
    "DEFAULT_GPU_RESOURCE",
    "GROUP",
    "KIND",
    "PLURAL",
    "RESERVED_CONTAINER",
    "RESERVED_MESSAGE",
    "RESERVED_PREFIX",
    "RESERVED_VOLUME",
    "RUNTIME_CONTAINER",
    "VERSION",
    "Affinity",
    "AsyaSpec",
    "AsyaStatus",
    "Condition",
    "HandlerScript",
    "ResourcesSpec",
    "RetrySpec",
    "RuntimeSpec",
    "ScalingSpec",
    "SchedulingSpec",
    "SecretKeyRef",
    "SidecarSpec",
    "Toleration",
    "TransportSpec",
    "WorkloadKind",
    "WorkloadSpec",
]

GROUP = "asya.sh"
VERSION = "v1alpha1"
KIND = "Asya"
PLURAL = "asyas"
SINGULAR = "asya"
RUNTIME_CONTAINER = "asya-runtime"
RESERVED_CONTAINER = "asya-sidecar"
RESERVED_VOLUME = "asya-socket"

RESERVED_PREFIX = RESERVED_QUEUE_PREFIX
"""RabbitMQ refuses to declare a queue or an exchange whose name starts with this (403
ACCESS_REFUSED), and the sidecar refuses such a name at start, so the CRD refuses it first."""
RESERVED_MESSAGE = f"names starting with '{RESERVED_PREFIX}' are reserved by RabbitMQ"

_QUEUE = Meta(
    # Anchored, RE2-compatible: the API server checks it as well as msgspec.
    pattern=f"^{QUEUE_NAME_PATTERN}$",
    max_length=MAX_QUEUE_NAME_BYTES,
    description="A queue (step) name: letters, digits, '.', '_', ':', '-'; not starting with "
    f"'{RESERVED_PREFIX}'.",
    # The API server's patterns are RE2 (no look-ahead), so the prefix is a CEL rule; the
    # model's own check is ``_refuse_reserved`` in ``__post_init__``.
    extra_json_schema={
        "x-kubernetes-validations": [
            {"rule": f"!self.startsWith('{RESERVED_PREFIX}')", "message": RESERVED_MESSAGE}
        ]
    },
)
Seconds = Annotated[float, Meta(gt=0, le=86400)]
DEFAULT_GPU_RESOURCE = "nvidia.com/gpu"
# A non-negative Kubernetes quantity (``500m``, ``2``, ``1.5Gi``, ``1e3``), RE2-compatible.
QUANTITY_PATTERN = r"^([0-9]+(\.[0-9]+)?|\.[0-9]+)([KMGTPE]i|[numkMGTPE]|[eE][0-9]+)?$"
_QUANTITY = Meta(pattern=QUANTITY_PATTERN, max_length=32)
_DNS_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS_SUBDOMAIN = Meta(pattern=rf"^{_DNS_LABEL}(\.{_DNS_LABEL})*$", max_length=253)
# An extended resource: ``<domain>/<name>``, as a device plugin advertises it on the node.
_EXTENDED_RESOURCE = Meta(
    pattern=rf"^{_DNS_LABEL}(\.{_DNS_LABEL})*/[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$",
    max_length=253,
)


class WorkloadKind(StrEnum):
    DEPLOYMENT = "Deployment"
    STATEFUL_SET = "StatefulSet"
    JOB = "Job"


def _refuse_reserved(**names: str | None) -> None:
    """Raise ``ValueError`` (a ``msgspec.ValidationError`` when decoding) for a reserved name."""
    for field, value in names.items():
        if value is not None and value.startswith(RESERVED_PREFIX):
            raise ValueError(f"{field} {value!r}: {RESERVED_MESSAGE}")


class _Base(
    msgspec.Struct, kw_only=True, rename="camel", omit_defaults=True, forbid_unknown_fields=True
):
    pass


class SecretKeyRef(_Base):
    """A key of a Secret in the resource's namespace."""

    name: Annotated[str, Meta(min_length=1, max_length=253)]
    key: Annotated[str, Meta(min_length=1, max_length=253)]


class WorkloadSpec(_Base):
    """What runs the actor. ``template`` is a pod template with a container named
    ``asya-runtime`` (the user's image); the operator adds the ``asya-sidecar`` container."""

    kind: WorkloadKind = WorkloadKind.DEPLOYMENT
    replicas: Annotated[int, Meta(ge=0, le=1000)] = 1
    """Replicas when scaling is off (for a Job: parallelism)."""
    template: dict[str, Any] = msgspec.field(default_factory=dict)
    volume_claim_templates: list[dict[str, Any]] = msgspec.field(default_factory=list)
    """StatefulSet only: PersistentVolumeClaim templates (core/v1), one claim per pod that
    outlives the pod; mount each in ``asya-runtime`` by its ``metadata.name``."""

    def __post_init__(self) -> None:
        if self.volume_claim_templates and self.kind is not WorkloadKind.STATEFUL_SET:
            raise ValueError("workload.volumeClaimTemplates needs workload.kind StatefulSet")


class HandlerScript(_Base):
    """A handler module shipped in a ConfigMap, mounted into the runtime container."""

    config_map: Annotated[str, Meta(min_length=1, max_length=253)]
    key: Annotated[str, Meta(pattern=r"^[A-Za-z_][A-Za-z0-9_]*\.py$")]
    """The file name, e.g. ``handler.py``; its module name is the file name without ``.py``."""


class ScalingSpec(_Base):
    """KEDA autoscaling on queue depth."""

    enabled: bool = False
    min_replicas: Annotated[int, Meta(ge=0, le=1000)] = 0
    max_replicas: Annotated[int, Meta(ge=1, le=1000)] = 10
    queue_length: Annotated[int, Meta(ge=1, le=100000)] = 5
    """Target messages (ready plus in flight) per replica."""
    activation_queue_length: Annotated[int, Meta(ge=0, le=100000)] = 0
    """Scale up from zero only above this many messages."""
    polling_interval: Annotated[int, Meta(ge=1, le=3600)] = 10
    cooldown_period: Annotated[int, Meta(ge=0, le=86400)] = 300


class ResourcesSpec(_Base):
    """The runtime container's resources. cpu: the request (no limit, so the handler is never
    throttled). memory: the request and the limit. gpu: the request and the limit (extended
    resources need both, equal) of gpuResource (default nvidia.com/gpu); 0 or unset asks for
    none. Set key by key over the template's asya-runtime resources, which keep every other key."""

    cpu: Annotated[str, _QUANTITY] | None = None
    """A Kubernetes quantity, quoted: ``"500m"``, ``"2"``."""
    memory: Annotated[str, _QUANTITY] | None = None
    """A Kubernetes quantity: ``"512Mi"``, ``"8Gi"``."""
    gpu: Annotated[int, Meta(ge=0, le=64)] | None = None
    gpu_resource: Annotated[str, _EXTENDED_RESOURCE] | None = None
    """The extended resource the GPU count asks for (default nvidia.com/gpu); needs gpu >= 1."""

    def __post_init__(self) -> None:
        if self.gpu_resource is not None and not self.gpu:
            raise ValueError("runtime.resources.gpuResource needs runtime.resources.gpu >= 1")

    @property
    def gpu_resource_name(self) -> str:
        return self.gpu_resource or DEFAULT_GPU_RESOURCE


class RuntimeSpec(_Base):
    timeout: Seconds = 300.0
    """Seconds the runtime has per message (ASYA_RUNTIME_TIMEOUT)."""
    concurrency: Annotated[int, Meta(ge=1, le=10000)] = 1
    """Messages in flight per pod (ASYA_CONCURRENCY and ASYA_RUNTIME_CONCURRENCY)."""
    shutdown_grace: Annotated[float, Meta(ge=0, le=3600)] = 30.0
    """Seconds in-flight messages get after SIGTERM (the pod's grace period adds 10)."""
    startup_timeout: Seconds = 60.0
    """Seconds the handler's setup (a class's __init__, a model load) may take before the
    runtime answers (ASYA_RUNTIME_WAIT, and the sidecar's startupProbe)."""
    resources: ResourcesSpec = msgspec.field(default_factory=ResourcesSpec)


class Toleration(_Base):
    """A core/v1 Toleration."""

    key: Annotated[str, Meta(max_length=316)] | None = None
    operator: Annotated[str, Meta(pattern=r"^(Exists|Equal)$")] | None = None
    value: Annotated[str, Meta(max_length=63)] | None = None
    effect: Annotated[str, Meta(pattern=r"^(NoSchedule|PreferNoSchedule|NoExecute)$")] | None = None
    toleration_seconds: int | None = None

    def __post_init__(self) -> None:
        if self.operator == "Exists" and self.value:
            raise ValueError("a toleration with operator Exists takes no value")
        if not self.key and self.operator != "Exists":
            raise ValueError("a toleration without a key needs operator Exists")


class Affinity(_Base):
    """A core/v1 Affinity; each part given here replaces the template's part."""

    node_affinity: dict[str, Any] | None = None
    pod_affinity: dict[str, Any] | None = None
    pod_anti_affinity: dict[str, Any] | None = None


class SchedulingSpec(_Base):
    """Where the actor's pods run, merged into the pod template's spec: nodeSelector key by key
    over the template's, tolerations after the template's, affinity part by part
    (nodeAffinity, podAffinity, podAntiAffinity), runtimeClassName over the template's."""

    node_selector: dict[str, str] = msgspec.field(default_factory=dict)
    tolerations: list[Toleration] = msgspec.field(default_factory=list)
    affinity: Affinity | None = None
    runtime_class_name: Annotated[str, _DNS_SUBDOMAIN] | None = None


class RetrySpec(_Base):
    max_attempts: Annotated[int, Meta(ge=1, le=1000)] = 1
    base_delay: Annotated[float, Meta(ge=0, le=86400)] = 1.0
    max_delay: Annotated[float, Meta(ge=0, le=86400)] = 300.0
    codes: list[Annotated[str, Meta(pattern=f"^{ERROR_CODE_PATTERN}$")]] = msgspec.field(
        default_factory=list
    )
    redelivery_limit: Annotated[int, Meta(ge=0, le=1000)] = 5


class SidecarSpec(_Base):
    image: Annotated[str, Meta(min_length=1)] = "asya-sidecar:0.1.0"
    image_pull_policy: Annotated[str, Meta(pattern=r"^(Always|IfNotPresent|Never)$")] = (
        "IfNotPresent"
    )
    resources: dict[str, Any] = msgspec.field(default_factory=dict)
    env: list[dict[str, Any]] = msgspec.field(default_factory=list)


class TransportSpec(_Base):
    """RabbitMQ. The URL comes only from a Secret (never inline)."""

    url_secret_ref: SecretKeyRef
    management_url_secret_ref: SecretKeyRef | None = None
    """The management API URL (``http://user:pass@host:15672/vhost``). With it, KEDA counts
    messages in flight as well as ready ones; without it, ready messages only (AMQP)."""
    exchange: Annotated[str, _QUEUE] = "asya"
    happy_end: Annotated[str, _QUEUE] = "happy-end"
    error_end: Annotated[str, _QUEUE] = "error-end"

    def __post_init__(self) -> None:
        _refuse_reserved(
            **{
                "exchange": self.exchange,
                "happyEnd": self.happy_end,
                "errorEnd": self.error_end,
            }
        )


class AsyaSpec(_Base):
    transport: TransportSpec
    workload: WorkloadSpec = msgspec.field(default_factory=WorkloadSpec)
    queue: Annotated[str, _QUEUE] | None = None
    """The queue this actor consumes; defaults to the resource's name."""
    handler: (
        Annotated[str, Meta(pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_][\w]*(\.[A-Za-z_]\w*)?$")] | None
    ) = None
    """``package.module:function`` or ``package.module:Class.method`` (ASYA_HANDLER)."""
    handler_mode: HandlerMode = HandlerMode.PAYLOAD
    handler_script: HandlerScript | None = None
    scaling: ScalingSpec = msgspec.field(default_factory=ScalingSpec)
    runtime: RuntimeSpec = msgspec.field(default_factory=RuntimeSpec)
    retry: RetrySpec = msgspec.field(default_factory=RetrySpec)
    sidecar: SidecarSpec = msgspec.field(default_factory=SidecarSpec)
    scheduling: SchedulingSpec = msgspec.field(default_factory=SchedulingSpec)
    delete_queue_on_delete: bool = False
    """Delete the queue from RabbitMQ when the resource is deleted (through a finalizer)."""

    def __post_init__(self) -> None:
        _refuse_reserved(queue=self.queue)


# The status is written as a merge patch, so every field is written, defaults too: a count of 0
# must overwrite an older count (the schema is the same either way).
class Condition(_Base, omit_defaults=False):
    type: str
    status: str
    reason: str
    message: str = ""
    observed_generation: int = 0
    last_transition_time: str = ""


class AsyaStatus(_Base, omit_defaults=False):
    conditions: list[Condition] = msgspec.field(default_factory=list)
    observed_generation: int = 0
    queue: str = ""
    replicas: int = 0
    ready_replicas: int = 0
    queue_depth: int | None = None
    managed_objects: list[str] = msgspec.field(default_factory=list)
    """``Kind/name`` of every object the operator applied for this resource (pruned when a
    spec change no longer needs one)."""
