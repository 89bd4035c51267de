"""Generate the ``Asya`` CustomResourceDefinition from :mod:`asya_operator.model`.

``python -m asya_operator crd`` prints it; ``deploy/helm/asya/crds/`` holds the output, and a test
fails if the committed file differs from what this module generates.

The output depends on the model and on nothing else: descriptions are written here from the
model's own text (:func:`_description`), never taken from how a msgspec version cleans
docstrings, so any msgspec the package allows gives the same bytes.
"""

from __future__ import annotations

import copy
from typing import Any

import msgspec

from . import model
from .model import (
    GROUP,
    KIND,
    PLURAL,
    RESERVED_CONTAINER,
    RESERVED_MESSAGE,
    RESERVED_PREFIX,
    RESERVED_VOLUME,
    RUNTIME_CONTAINER,
    SINGULAR,
    VERSION,
    AsyaSpec,
    AsyaStatus,
)

__all__ = ["crd", "crd_yaml", "openapi_schema"]

_DROP = {"title", "$schema"}
# JSON Schema's exclusive bound -> OpenAPI v3.0's bound, flagged exclusive.
_EXCLUSIVE = {"exclusiveMinimum": "minimum", "exclusiveMaximum": "maximum"}


def _inline(schema: Any, defs: dict[str, Any]) -> Any:
    """Resolve ``$ref``s and turn JSON Schema into a Kubernetes structural schema."""
    if isinstance(schema, list):
        return [_inline(s, defs) for s in schema]
    if not isinstance(schema, dict):
        return schema
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        merged = {**copy.deepcopy(defs[name]), **{k: v for k, v in schema.items() if k != "$ref"}}
        return _inline(merged, defs)
    if "anyOf" in schema:  # Optional[X]: X, not required
        options = [s for s in schema["anyOf"] if s != {"type": "null"}]
        rest = {k: v for k, v in schema.items() if k not in ("anyOf", "default")}
        if len(options) == 1:
            return _inline({**options[0], **rest}, defs)
    return _structural(schema, defs)


def _structural(schema: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """One schema object's keys in Kubernetes' dialect (OpenAPI v3.0 bounds, no titles)."""
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in _DROP:
            continue
        if key == "properties":
            out[key] = {k: _inline(v, defs) for k, v in value.items()}
        elif key in ("items", "additionalProperties"):
            out[key] = _inline(value, defs) if isinstance(value, dict) else value
        elif key in _EXCLUSIVE:
            out[_EXCLUSIVE[key]], out[key] = value, True
        else:
            out[key] = value
    if "enum" in out and "type" not in out:
        out["type"] = "string"
    if out.get("type") == "object":
        out.pop("additionalProperties", None)
        if "properties" not in out:
            out["x-kubernetes-preserve-unknown-fields"] = True
    return out


def _description(cls: type) -> str | None:
    """A model class's own docstring with every run of whitespace made one space, or None.

    Only a docstring written on the class itself counts (``Enum`` and ``Struct`` bases supply
    none), so the text is exactly the model's, on one line, whatever the Python or msgspec version.
    """
    doc = cls.__dict__.get("__doc__")
    return " ".join(doc.split()) if isinstance(doc, str) and doc.strip() else None


def _struct_schema(struct: type[msgspec.Struct]) -> dict[str, Any]:
    (ref,), components = msgspec.json.schema_components([struct], ref_template="#/$defs/{name}")
    for name, component in components.items():
        component.pop("description", None)
        cls = getattr(model, name, None)
        text = _description(cls) if isinstance(cls, type) else None
        if text is not None:
            component["description"] = text
    schema: dict[str, Any] = _inline(ref, components)
    return schema


_CONTAINER_LIST = {
    "type": "array",
    "maxItems": 20,
    "items": {
        "type": "object",
        "required": ["name"],
        "properties": {"name": {"type": "string", "maxLength": 63}},
        "x-kubernetes-preserve-unknown-fields": True,
    },
}


def _template_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "description": "A pod template (core/v1 PodTemplateSpec) with a container named "
        f"'{RUNTIME_CONTAINER}'. The operator adds '{RESERVED_CONTAINER}' and the "
        f"'{RESERVED_VOLUME}' volume.",
        "x-kubernetes-preserve-unknown-fields": True,
        "required": ["spec"],
        "properties": {
            "spec": {
                "type": "object",
                "x-kubernetes-preserve-unknown-fields": True,
                "required": ["containers"],
                "properties": {
                    "containers": _CONTAINER_LIST,
                    "initContainers": _CONTAINER_LIST,
                    "volumes": {
                        **_CONTAINER_LIST,
                        "maxItems": 50,
                    },
                },
                "x-kubernetes-validations": [
                    {
                        "rule": f"self.containers.exists(c, c.name == '{RUNTIME_CONTAINER}')",
                        "message": "the pod template needs a container named "
                        f"'{RUNTIME_CONTAINER}'",
                    },
                    {
                        "rule": f"!self.containers.exists(c, c.name == '{RESERVED_CONTAINER}')",
                        "message": f"'{RESERVED_CONTAINER}' is reserved for the injected sidecar",
                    },
                    {
                        "rule": "!has(self.initContainers) || "
                        f"!self.initContainers.exists(c, c.name == '{RESERVED_CONTAINER}')",
                        "message": f"'{RESERVED_CONTAINER}' is reserved for the injected sidecar",
                    },
                    {
                        "rule": "!has(self.volumes) || "
                        f"!self.volumes.exists(v, v.name == '{RESERVED_VOLUME}')",
                        "message": f"volume name '{RESERVED_VOLUME}' is reserved for the runtime "
                        "socket",
                    },
                ],
            }
        },
    }


def _claims_schema() -> dict[str, Any]:
    return {
        "type": "array",
        "maxItems": 10,
        "description": "StatefulSet only: PersistentVolumeClaim templates (core/v1), one claim "
        f"per pod that outlives the pod; mount each in '{RUNTIME_CONTAINER}' by its name.",
        "items": {
            "type": "object",
            "required": ["metadata", "spec"],
            "x-kubernetes-preserve-unknown-fields": True,
            "properties": {
                "metadata": {
                    "type": "object",
                    "required": ["name"],
                    "x-kubernetes-preserve-unknown-fields": True,
                    "properties": {"name": {"type": "string", "maxLength": 63}},
                },
                "spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
            },
        },
    }


def _placement_rules(props: dict[str, Any]) -> None:
    """The resources and scheduling fields' cross-field rules (the model's ``__post_init__``)."""
    props["runtime"]["properties"]["resources"]["x-kubernetes-validations"] = [
        {
            "rule": "!has(self.gpuResource) || (has(self.gpu) && self.gpu > 0)",
            "message": "gpuResource needs gpu >= 1",
        }
    ]
    scheduling = props["scheduling"]["properties"]
    scheduling["nodeSelector"] = {
        "type": "object",
        "maxProperties": 64,
        "additionalProperties": {"type": "string", "maxLength": 253},
    }
    scheduling["tolerations"]["maxItems"] = 50
    scheduling["tolerations"]["items"]["x-kubernetes-validations"] = [
        {
            "rule": "!has(self.operator) || self.operator != 'Exists' || !has(self.value) "
            "|| self.value == ''",
            "message": "a toleration with operator Exists takes no value",
        },
        {
            "rule": "(has(self.key) && self.key != '') "
            "|| (has(self.operator) && self.operator == 'Exists')",
            "message": "a toleration without a key needs operator Exists",
        },
    ]


def openapi_schema() -> dict[str, Any]:
    spec = _struct_schema(AsyaSpec)
    props = spec["properties"]
    for name in ("scaling", "runtime", "retry", "sidecar"):
        props[name]["default"] = {}
    props["workload"]["properties"]["template"] = _template_schema()
    props["workload"]["properties"]["volumeClaimTemplates"] = _claims_schema()
    props["workload"]["required"] = ["template"]
    props["workload"]["x-kubernetes-validations"] = [
        {
            "rule": "!has(self.volumeClaimTemplates) || size(self.volumeClaimTemplates) == 0 "
            "|| (has(self.kind) && self.kind == 'StatefulSet')",
            "message": "volumeClaimTemplates needs kind StatefulSet",
        }
    ]
    spec["required"] = sorted({"transport", "workload"})
    props["scaling"]["x-kubernetes-validations"] = [
        {
            "rule": "!has(self.minReplicas) || !has(self.maxReplicas) "
            "|| self.minReplicas <= self.maxReplicas",
            "message": "minReplicas must be <= maxReplicas",
        }
    ]
    props["retry"]["x-kubernetes-validations"] = [
        {
            "rule": "!has(self.baseDelay) || !has(self.maxDelay) "
            "|| self.baseDelay <= self.maxDelay",
            "message": "baseDelay must be <= maxDelay",
        }
    ]
    props["retry"]["properties"]["codes"]["maxItems"] = 50
    props["sidecar"]["properties"]["env"]["maxItems"] = 100
    _placement_rules(props)
    spec["x-kubernetes-validations"] = [
        {
            "rule": "has(self.handler) || has(self.handlerScript)",
            "message": "set handler (package.module:function) or handlerScript",
        },
    ]
    status = _struct_schema(AsyaStatus)
    status["properties"]["conditions"]["x-kubernetes-list-type"] = "map"
    status["properties"]["conditions"]["x-kubernetes-list-map-keys"] = ["type"]
    status["properties"]["conditions"]["maxItems"] = 16
    return {
        "type": "object",
        "required": ["spec"],
        "x-kubernetes-validations": [
            {
                "rule": "has(self.spec.queue) "
                f"|| !self.metadata.name.startsWith('{RESERVED_PREFIX}')",
                "message": f"the queue defaults to the resource's name, and {RESERVED_MESSAGE}: "
                "set spec.queue",
            }
        ],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": spec,
            "status": status,
        },
    }


def crd() -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{PLURAL}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": SINGULAR,
                "categories": ["asya"],
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "schema": {"openAPIV3Schema": openapi_schema()},
                    "additionalPrinterColumns": [
                        {"name": "Queue", "type": "string", "jsonPath": ".status.queue"},
                        {"name": "Workload", "type": "string", "jsonPath": ".spec.workload.kind"},
                        {
                            "name": "Ready",
                            "type": "string",
                            "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
                        },
                        {
                            "name": "Replicas",
                            "type": "integer",
                            "jsonPath": ".status.readyReplicas",
                        },
                        {"name": "Depth", "type": "integer", "jsonPath": ".status.queueDepth"},
                        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                    ],
                }
            ],
        },
    }


def crd_yaml() -> str:
    import yaml  # noqa: PLC0415 - only the generator needs it

    header = (
        "# Generated by `python -m asya_operator crd` from asya_operator/model.py. Do not edit.\n"
    )
    # Keys sorted: the bytes depend on the content only, not on the order a library emits keys in.
    return header + yaml.safe_dump(crd(), sort_keys=True, width=100)
