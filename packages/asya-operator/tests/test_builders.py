"""The builders, one by one: spec in, manifests out."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from asya_operator.builders import (
    ACTOR_LABEL,
    Actor,
    desired_objects,
    scaled_object,
    sidecar_container,
    trigger_authentication,
    workload,
)
from asya_operator.conditions import Cond, job_condition, merge_conditions, ready_condition

BASE: dict[str, Any] = {
    "metadata": {"name": "inference", "namespace": "ml", "uid": "u-1", "generation": 3},
    "spec": {
        "transport": {"urlSecretRef": {"name": "rabbitmq", "key": "url"}},
        "handler": "pipeline.steps:inference",
        "workload": {
            "template": {
                "metadata": {"labels": {"team": "nlp"}},
                "spec": {
                    "containers": [
                        {
                            "name": "asya-runtime",
                            "image": "my/model:1",
                            "env": [{"name": "MODEL", "value": "small"}],
                        }
                    ]
                },
            }
        },
    },
}


def actor(**spec: Any) -> Actor:
    obj = copy.deepcopy(BASE)
    obj["spec"].update(spec)
    return Actor.from_resource(obj)


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def test_deployment_with_sidecar_injected() -> None:
    a = actor()
    dep = workload(a)
    assert dep["apiVersion"] == "apps/v1"
    assert dep["kind"] == "Deployment"
    assert dep["metadata"]["ownerReferences"] == [
        {
            "apiVersion": "asya.sh/v1alpha1",
            "kind": "Asya",
            "name": "inference",
            "uid": "u-1",
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    assert dep["spec"]["replicas"] == 1
    assert dep["spec"]["selector"] == {"matchLabels": {ACTOR_LABEL: "inference"}}
    pod = dep["spec"]["template"]
    assert pod["metadata"]["labels"]["team"] == "nlp"
    assert pod["metadata"]["labels"][ACTOR_LABEL] == "inference"
    runtime, sidecar = pod["spec"]["containers"]
    assert runtime["name"] == "asya-runtime"
    assert sidecar["name"] == "asya-sidecar"
    renv = env_of(runtime)
    assert renv["MODEL"] == "small"
    assert renv["ASYA_HANDLER"] == "pipeline.steps:inference"
    assert renv["ASYA_SOCKET_PATH"] == "/var/run/asya/runtime.sock"
    senv = env_of(sidecar)
    assert senv["ASYA_ACTOR_NAME"] == "inference"
    assert senv["ASYA_SOCKET_PATH"] == renv["ASYA_SOCKET_PATH"]
    assert senv["ASYA_RABBITMQ_URL"] == {"secretKeyRef": {"name": "rabbitmq", "key": "url"}}
    assert senv["ASYA_RABBITMQ_EXCHANGE"] == "asya"
    assert senv["ASYA_HAPPY_END_QUEUE"] == "happy-end"
    assert senv["ASYA_ERROR_END_QUEUE"] == "error-end"
    mounts = {m["name"]: m["mountPath"] for m in runtime["volumeMounts"]}
    assert mounts == {m["name"]: m["mountPath"] for m in sidecar["volumeMounts"]}
    assert mounts == {"asya-socket": "/var/run/asya"}
    assert {"name": "asya-socket", "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}} in pod[
        "spec"
    ]["volumes"]
    assert pod["spec"]["securityContext"]["fsGroup"] == 10001
    assert pod["spec"]["terminationGracePeriodSeconds"] == 40


def test_sidecar_is_locked_down_and_probed() -> None:
    sidecar = sidecar_container(actor())
    sc = sidecar["securityContext"]
    assert sc["runAsNonRoot"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sidecar["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "asya-http"}
    assert sidecar["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "asya-http"}
    # Credentials only through secretKeyRef: no literal URL anywhere.
    assert all("amqp://" not in str(e.get("value", "")) for e in sidecar["env"])


def test_settings_flow_into_sidecar_env() -> None:
    a = actor(
        queue="classify",
        runtime={"timeout": 12.5, "concurrency": 8, "shutdownGrace": 20},
        retry={
            "maxAttempts": 3,
            "baseDelay": 0.5,
            "maxDelay": 9,
            "codes": ["timeout"],
            "redeliveryLimit": 2,
        },
        sidecar={
            "image": "reg/asya-sidecar:9",
            "env": [{"name": "ASYA_LOG_LEVEL", "value": "DEBUG"}],
            "resources": {"limits": {"memory": "128Mi"}},
        },
    )
    sidecar = sidecar_container(a)
    senv = env_of(sidecar)
    assert senv["ASYA_ACTOR_NAME"] == "classify"
    assert senv["ASYA_RUNTIME_TIMEOUT"] == "12.5"
    assert senv["ASYA_CONCURRENCY"] == "8"
    assert senv["ASYA_RETRY_MAX_ATTEMPTS"] == "3"
    assert senv["ASYA_RETRY_BASE_DELAY"] == "0.5"
    assert senv["ASYA_RETRY_CODES"] == "timeout"
    assert senv["ASYA_REDELIVERY_LIMIT"] == "2"
    assert senv["ASYA_SHUTDOWN_GRACE"] == "20"
    assert senv["ASYA_LOG_LEVEL"] == "DEBUG"
    assert sidecar["image"] == "reg/asya-sidecar:9"
    assert sidecar["resources"] == {"limits": {"memory": "128Mi"}}
    runtime = workload(a)["spec"]["template"]["spec"]["containers"][0]
    assert env_of(runtime)["ASYA_RUNTIME_CONCURRENCY"] == "8"
    assert env_of(runtime)["ASYA_RUNTIME_TIMEOUT"] == senv["ASYA_RUNTIME_TIMEOUT"]


def test_handler_script_from_config_map() -> None:
    a = actor(handler=None, handlerScript={"configMap": "handlers", "key": "classify.py"})
    pod = workload(a)["spec"]["template"]["spec"]
    runtime = pod["containers"][0]
    renv = env_of(runtime)
    assert renv["ASYA_HANDLER"] == "classify:handler"
    assert renv["PYTHONPATH"] == "/opt/asya/handler"
    assert {"name": "asya-handler", "mountPath": "/opt/asya/handler", "readOnly": True} in runtime[
        "volumeMounts"
    ]
    assert {
        "name": "asya-handler",
        "configMap": {"name": "handlers", "items": [{"key": "classify.py", "path": "classify.py"}]},
    } in pod["volumes"]


def test_statefulset_has_headless_service() -> None:
    a = actor(workload={**BASE["spec"]["workload"], "kind": "StatefulSet", "replicas": 2})
    objs = desired_objects(a)
    assert [o["kind"] for o in objs] == ["Service", "StatefulSet"]
    svc, sts = objs
    assert svc["metadata"]["name"] == "inference-headless"
    assert svc["spec"]["clusterIP"] == "None"
    assert sts["spec"]["serviceName"] == "inference-headless"
    assert sts["spec"]["replicas"] == 2


CLAIM = {
    "metadata": {"name": "data"},
    "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
}


def test_statefulset_claims_are_passed_through() -> None:
    a = actor(
        workload={
            **BASE["spec"]["workload"],
            "kind": "StatefulSet",
            "volumeClaimTemplates": [CLAIM],
        }
    )
    sts = workload(a)
    assert sts["spec"]["volumeClaimTemplates"] == [CLAIM]
    assert (
        "volumeClaimTemplates"
        not in workload(actor(workload={**BASE["spec"]["workload"], "kind": "StatefulSet"}))["spec"]
    )


def test_claims_need_a_statefulset() -> None:
    import msgspec

    with pytest.raises(msgspec.ValidationError, match=r"needs workload\.kind StatefulSet"):
        actor(workload={**BASE["spec"]["workload"], "volumeClaimTemplates": [CLAIM]})


def test_a_reserved_resource_name_needs_an_explicit_queue() -> None:
    import msgspec

    obj = copy.deepcopy(BASE)
    obj["metadata"]["name"] = "amq.inference"
    with pytest.raises(msgspec.ValidationError, match=r"set spec\.queue"):
        Actor.from_resource(obj)
    obj["spec"]["queue"] = "inference"
    assert Actor.from_resource(obj).queue == "inference"


def test_sidecar_env_overrides_the_operators_once() -> None:
    a = actor(
        workload={**BASE["spec"]["workload"], "kind": "Job"},
        sidecar={"env": [{"name": "ASYA_EXIT_WHEN_IDLE", "value": "5"}]},
    )
    [job] = desired_objects(a)
    [sidecar] = job["spec"]["template"]["spec"]["containers"]
    names = [e["name"] for e in sidecar["env"]]
    assert names.count("ASYA_EXIT_WHEN_IDLE") == 1
    assert env_of(sidecar)["ASYA_EXIT_WHEN_IDLE"] == "5"


def _job(name: str, *, state: str | None = None, at: str = "", **status: int) -> dict[str, Any]:
    """A Job as the API server returns it, in the shape the Job controller writes."""
    conditions = []
    if state == "Failed":
        conditions = [{"type": "Failed", "status": "True", "lastTransitionTime": at,
                       "reason": "BackoffLimitExceeded",
                       "message": "Job has reached the specified backoff limit"}]  # fmt: skip
    elif state == "Complete":
        conditions = [
            {"type": "SuccessCriteriaMet", "status": "True", "lastTransitionTime": at},
            {"type": "Complete", "status": "True", "lastTransitionTime": at},
        ]
    return {"metadata": {"name": name}, "status": {**status, "conditions": conditions}}


def test_one_jobs_condition_follows_its_state() -> None:
    def cond(*jobs: dict[str, Any]) -> tuple[bool, str, str]:
        c = job_condition(list(jobs), scaled=False, parallelism=2)
        return c.ok, c.reason, c.message

    assert cond() == (False, "Progressing", "the Job is not created yet")
    assert cond(_job("j", active=2)) == (False, "Progressing", "0/2 pods ready")
    paused = job_condition([_job("j")], scaled=False, parallelism=0)
    assert (paused.ok, paused.reason) == (True, "Paused")
    assert cond(_job("j", active=2, ready=1)) == (True, "JobRunning", "1/2 pods ready")
    assert cond(_job("j", state="Complete", succeeded=2)) == (
        True,
        "JobComplete",
        "2 pods succeeded",
    )
    ok, reason, message = cond(_job("j", state="Failed", failed=7))
    assert (ok, reason) == (False, "JobFailed")
    assert message == "Job j: BackoffLimitExceeded: Job has reached the specified backoff limit"


def test_scaled_jobs_condition_follows_the_jobs_keda_started() -> None:
    def cond(*jobs: dict[str, Any]) -> tuple[bool, str, str]:
        c = job_condition(list(jobs), scaled=True, parallelism=1)
        return c.ok, c.reason, c.message

    assert cond()[:2] == (True, "ScaledJob")
    assert cond(_job("a", active=1, ready=1), _job("b", state="Complete", at="t1")) == (
        True, "JobsRunning", "1 Jobs running (1 pods ready); 1 succeeded, 0 failed",
    )  # fmt: skip
    failed_last = cond(_job("a", state="Complete", at="t1"), _job("b", state="Failed", at="t2"))
    assert failed_last[:2] == (False, "JobFailed")
    assert failed_last[2].startswith("Job b: BackoffLimitExceeded")
    recovered = cond(_job("a", state="Failed", at="t1"), _job("b", state="Complete", at="t2"))
    assert recovered[:2] == (True, "ScaledJob")
    assert recovered[2].endswith("arrive; 1 succeeded, 1 failed")


def test_job_runs_runtime_as_native_sidecar() -> None:
    a = actor(workload={**BASE["spec"]["workload"], "kind": "Job", "replicas": 3})
    [job] = desired_objects(a)
    assert job["apiVersion"] == "batch/v1"
    assert job["spec"]["parallelism"] == 3
    pod = job["spec"]["template"]["spec"]
    assert [c["name"] for c in pod["initContainers"]] == ["asya-runtime"]
    assert pod["initContainers"][0]["restartPolicy"] == "Always"
    assert [c["name"] for c in pod["containers"]] == ["asya-sidecar"]
    assert env_of(pod["containers"][0])["ASYA_EXIT_WHEN_IDLE"] == "30"
    assert pod["restartPolicy"] == "OnFailure"


def test_scaling_builds_scaled_object_and_auth() -> None:
    a = actor(
        scaling={
            "enabled": True,
            "minReplicas": 0,
            "maxReplicas": 7,
            "queueLength": 4,
            "activationQueueLength": 2,
            "pollingInterval": 5,
            "cooldownPeriod": 60,
        }
    )
    kinds = [o["kind"] for o in desired_objects(a)]
    assert kinds == ["Deployment", "TriggerAuthentication", "ScaledObject"]
    assert "replicas" not in workload(a)["spec"]  # the HPA owns it
    so = scaled_object(a)
    assert so["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "inference",
    }
    assert (so["spec"]["minReplicaCount"], so["spec"]["maxReplicaCount"]) == (0, 7)
    [trigger] = so["spec"]["triggers"]
    assert trigger["type"] == "rabbitmq"
    assert trigger["metadata"] == {
        "protocol": "amqp",
        "mode": "QueueLength",
        "value": "4",
        "activationValue": "2",
        "queueName": "inference",
    }
    assert trigger["authenticationRef"] == {"name": "inference-rabbitmq"}
    auth = trigger_authentication(a)
    assert auth["spec"]["secretTargetRef"] == [
        {"parameter": "host", "name": "rabbitmq", "key": "url"}
    ]


def test_management_url_counts_messages_in_flight() -> None:
    a = actor(
        transport={
            "urlSecretRef": {"name": "rabbitmq", "key": "url"},
            "managementUrlSecretRef": {"name": "rabbitmq", "key": "management"},
        },
        scaling={"enabled": True},
    )
    assert scaled_object(a)["spec"]["triggers"][0]["metadata"]["protocol"] == "http"
    assert trigger_authentication(a)["spec"]["secretTargetRef"][0]["key"] == "management"


def test_scaled_job_for_job_workloads() -> None:
    a = actor(workload={**BASE["spec"]["workload"], "kind": "Job"}, scaling={"enabled": True})
    objs = desired_objects(a)
    assert [o["kind"] for o in objs] == ["TriggerAuthentication", "ScaledJob"]
    sj = objs[1]
    assert sj["spec"]["jobTargetRef"]["template"]["spec"]["containers"][0]["name"] == "asya-sidecar"


def test_builders_are_deterministic() -> None:
    assert desired_objects(actor()) == desired_objects(actor())


def test_conditions_keep_transition_time_when_status_holds() -> None:
    first = merge_conditions([], [Cond("QueueReady", True, "Declared")], generation=1, now="t1")
    again = merge_conditions(
        first, [Cond("QueueReady", True, "Declared", "x")], generation=2, now="t2"
    )
    assert again[0]["lastTransitionTime"] == "t1"
    assert again[0]["observedGeneration"] == 2
    flipped = merge_conditions(
        again, [Cond("QueueReady", False, "BrokerUnavailable")], generation=2, now="t3"
    )
    assert flipped[0]["lastTransitionTime"] == "t3"
    assert ready_condition([Cond("A", True, "ok"), Cond("B", False, "Bad", "m")]).reason == "Bad"


@pytest.mark.parametrize("bad", [{"workload": {"kind": "Nope", "template": {}}}, {"queue": "a b"}])
def test_invalid_spec_raises(bad: dict[str, Any]) -> None:
    import msgspec

    with pytest.raises(msgspec.ValidationError):
        actor(**bad)


@pytest.mark.parametrize(
    "spec",
    [
        {},
        {"workload": {**BASE["spec"]["workload"], "kind": "Job"}},
        {
            "runtime": {"timeout": 0.25, "concurrency": 10000, "shutdownGrace": 0},
            "retry": {"maxAttempts": 1000, "baseDelay": 0, "maxDelay": 86400, "codes": ["a_1"]},
        },
    ],
)
def test_the_built_env_is_what_the_sidecar_and_runtime_read(spec: dict[str, Any]) -> None:
    """The env goes through the containers' own settings schema and reads back as the spec."""
    from asya_protocol.actor_settings import RuntimeSettings, SidecarSettings
    from asya_protocol.settings import load

    a = actor(**spec)
    pod = workload(a)["spec"]["template"]["spec"]
    containers = pod.get("initContainers", []) + pod["containers"]
    by_name = {c["name"]: c for c in containers}
    senv = {e["name"]: e["value"] for e in by_name["asya-sidecar"]["env"] if "value" in e}
    sidecar = load(SidecarSettings, senv, rabbitmq_url="amqp://from-the-secret/")
    assert (sidecar.actor, sidecar.concurrency) == (a.queue, a.spec.runtime.concurrency)
    assert sidecar.runtime_timeout == a.spec.runtime.timeout
    assert sidecar.retry.max_attempts == a.spec.retry.max_attempts
    assert sidecar.retry.codes == frozenset(a.spec.retry.codes)
    runtime_env = {e["name"]: e["value"] for e in by_name["asya-runtime"]["env"]}
    runtime = load(RuntimeSettings, runtime_env)
    assert (runtime.handler, runtime.mode) == (a.spec.handler, a.spec.handler_mode)
    assert runtime.socket_path == sidecar.socket_path
