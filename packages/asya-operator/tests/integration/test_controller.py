"""The controller against a real kube-apiserver and a real RabbitMQ."""

from __future__ import annotations

import asyncio
from typing import Any

import aiormq
import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from asya_operator.controller import FINALIZER
from asya_testing import AmqpClient, AmqpNames
from asya_testing.kube_fixtures import server_side_apply

G, V, P = "asya.sh", "v1alpha1", "asyas"
MERGE = "application/merge-patch+json"


async def merge_patch(custom: Any, ns: str, name: str, body: dict[str, Any]) -> None:
    await custom.patch_namespaced_custom_object(
        G, V, ns, P, name, body, _content_type="application/merge-patch+json"
    )


async def missing(call: Any) -> bool:
    try:
        await call
    except ApiException as exc:
        return bool(exc.status == 404)
    return False


async def get_asya(custom: Any, ns: str, name: str) -> dict[str, Any]:
    return dict(await custom.get_namespaced_custom_object(G, V, ns, P, name))


def condition(obj: dict[str, Any], kind: str) -> dict[str, Any]:
    return next(c for c in obj["status"]["conditions"] if c["type"] == kind)


async def test_deployment_actor_end_to_end(
    kube_api: Any,
    kube_namespace: str,
    custom: Any,
    asya_body: Any,
    run_controller: Any,
    eventually: Any,
    amqp_url: str,
    amqp_names: AmqpNames,
) -> None:
    run_controller()
    body = asya_body("inference", scaling={"enabled": True, "minReplicas": 0, "maxReplicas": 4})
    await custom.create_namespaced_custom_object(G, V, kube_namespace, P, body)

    async def ready() -> dict[str, Any]:
        obj = await get_asya(custom, kube_namespace, "inference")
        assert condition(obj, "Ready")["status"] == "True", obj["status"]
        return obj

    obj = await eventually(ready)
    assert obj["status"]["queue"] == amqp_names.queue("inference")
    assert obj["status"]["observedGeneration"] == obj["metadata"]["generation"]
    assert {c["type"] for c in obj["status"]["conditions"]} == {
        "Ready",
        "WorkloadReady",
        "ScalingReady",
        "QueueReady",
    }
    dep = await client.AppsV1Api(kube_api).read_namespaced_deployment("inference", kube_namespace)
    containers = {c.name: c for c in dep.spec.template.spec.containers}
    assert set(containers) == {"asya-runtime", "asya-sidecar"}
    sidecar_env = {e.name: e for e in containers["asya-sidecar"].env}
    assert sidecar_env["ASYA_ACTOR_NAME"].value == amqp_names.queue("inference")
    assert sidecar_env["ASYA_RABBITMQ_URL"].value_from.secret_key_ref.name == "rabbitmq"
    assert dep.metadata.owner_references[0].uid == obj["metadata"]["uid"]
    # Created at minReplicas (no pod before work arrives), then spec.replicas is the HPA's.
    assert dep.spec.replicas == 0
    owners = {f.manager for f in dep.metadata.managed_fields if "f:replicas" in str(f.fields_v1)}
    assert owners == {"asya-operator-replicas"}, owners
    keda = await custom.get_namespaced_custom_object(
        "keda.sh", "v1alpha1", kube_namespace, "scaledobjects", "inference"
    )
    assert keda["spec"]["scaleTargetRef"]["name"] == "inference"
    assert keda["spec"]["triggers"][0]["metadata"]["queueName"] == amqp_names.queue("inference")
    assert keda["metadata"]["ownerReferences"][0]["kind"] == "Asya"
    auth = await custom.get_namespaced_custom_object(
        "keda.sh", "v1alpha1", kube_namespace, "triggerauthentications", "inference-rabbitmq"
    )
    assert auth["spec"]["secretTargetRef"][0]["name"] == "rabbitmq"
    # The queue exists and is bound: a message published with the step's name reaches it.
    async with AmqpClient(amqp_url, amqp_names) as amqp:
        await amqp.publish(amqp_names.queue("inference"), {"route": {"steps": ["x"]}, "payload": 1})
        [got] = await amqp.take(amqp_names.queue("inference"), 1, timeout=10)
    assert got["payload"] == 1
    events = await client.CoreV1Api(kube_api).list_namespaced_event(kube_namespace)
    assert any(
        e.reason == "Reconciled" and e.involved_object.name == "inference" for e in events.items
    )


async def test_autoscaled_replicas_stay_the_hpas_across_spec_changes(
    kube_api: Any,
    kube_namespace: str,
    custom: Any,
    asya_body: Any,
    run_controller: Any,
    eventually: Any,
) -> None:
    """The HPA's count (written through the scale subresource) survives the operator's applies."""
    run_controller()
    body = asya_body("scaled", scaling={"enabled": True, "minReplicas": 0, "maxReplicas": 5})
    await custom.create_namespaced_custom_object(G, V, kube_namespace, P, body)
    await eventually(lambda: _ready(custom, kube_namespace, "scaled"))
    apps = client.AppsV1Api(kube_api)
    assert (await apps.read_namespaced_deployment("scaled", kube_namespace)).spec.replicas == 0
    # What KEDA's HPA does on work arriving.
    await apps.patch_namespaced_deployment_scale(
        "scaled", kube_namespace, {"spec": {"replicas": 3}}
    )
    await merge_patch(custom, kube_namespace, "scaled", {"spec": {"runtime": {"timeout": 42}}})

    async def applied() -> Any:
        dep = await apps.read_namespaced_deployment("scaled", kube_namespace)
        sidecar = next(c for c in dep.spec.template.spec.containers if c.name == "asya-sidecar")
        assert any(e.name == "ASYA_RUNTIME_TIMEOUT" and e.value == "42" for e in sidecar.env)
        return dep

    dep = await eventually(applied)
    assert dep.spec.replicas == 3, "the operator's apply reset the HPA's replica count"


async def test_statefulset_and_job(
    kube_api: Any,
    kube_namespace: str,
    custom: Any,
    asya_body: Any,
    run_controller: Any,
    eventually: Any,
) -> None:
    run_controller()
    template = {"spec": {"containers": [{"name": "asya-runtime", "image": "my/model:1"}]}}
    await custom.create_namespaced_custom_object(
        G,
        V,
        kube_namespace,
        P,
        asya_body(
            "stateful", workload={"kind": "StatefulSet", "replicas": 0, "template": template}
        ),
    )
    await custom.create_namespaced_custom_object(
        G,
        V,
        kube_namespace,
        P,
        asya_body("batch", workload={"kind": "Job", "replicas": 2, "template": template}),
    )
    await custom.create_namespaced_custom_object(
        G,
        V,
        kube_namespace,
        P,
        asya_body(
            "scaledbatch", workload={"kind": "Job", "template": template}, scaling={"enabled": True}
        ),
    )
    apps, core, batch = (
        client.AppsV1Api(kube_api),
        client.CoreV1Api(kube_api),
        client.BatchV1Api(kube_api),
    )

    async def all_there() -> bool:
        sts = await apps.read_namespaced_stateful_set("stateful", kube_namespace)
        assert sts.spec.service_name == "stateful-headless"
        svc = await core.read_namespaced_service("stateful-headless", kube_namespace)
        assert svc.spec.cluster_ip == "None"
        job = await batch.read_namespaced_job("batch", kube_namespace)
        assert job.spec.parallelism == 2
        assert [c.name for c in job.spec.template.spec.init_containers] == ["asya-runtime"]
        sj = await custom.get_namespaced_custom_object(
            "keda.sh", "v1alpha1", kube_namespace, "scaledjobs", "scaledbatch"
        )
        assert (
            sj["spec"]["jobTargetRef"]["template"]["spec"]["containers"][0]["name"]
            == "asya-sidecar"
        )
        for name in ("stateful", "scaledbatch"):
            assert (
                condition(await get_asya(custom, kube_namespace, name), "Ready")["status"] == "True"
            )
        # No Job controller or kubelet here: the Job exists but no pod of it is ready, and the
        # status says so (tests-e2e/cluster runs Jobs to completion on a real kubelet).
        batch_ready = condition(await get_asya(custom, kube_namespace, "batch"), "WorkloadReady")
        assert (batch_ready["status"], batch_ready["reason"]) == ("False", "Progressing")
        assert batch_ready["message"] == "0/2 pods ready"
        return True

    await eventually(all_there)


async def test_update_is_applied_and_kind_change_prunes(
    kube_api: Any,
    kube_namespace: str,
    custom: Any,
    asya_body: Any,
    run_controller: Any,
    eventually: Any,
) -> None:
    run_controller()
    await custom.create_namespaced_custom_object(
        G,
        V,
        kube_namespace,
        P,
        asya_body(
            "svc",
            workload={
                "replicas": 0,
                "template": {"spec": {"containers": [{"name": "asya-runtime", "image": "a:1"}]}},
            },
        ),
    )
    apps = client.AppsV1Api(kube_api)

    async def image(expected: str) -> bool:
        dep = await apps.read_namespaced_deployment("svc", kube_namespace)
        assert dep.spec.template.spec.containers[0].image == expected
        return True

    await eventually(lambda: image("a:1"))
    await merge_patch(
        custom,
        kube_namespace,
        "svc",
        {
            "spec": {
                "workload": {
                    "replicas": 0,
                    "template": {
                        "spec": {"containers": [{"name": "asya-runtime", "image": "a:2"}]}
                    },
                }
            }
        },
    )
    await eventually(lambda: image("a:2"))
    await merge_patch(
        custom,
        kube_namespace,
        "svc",
        {
            "spec": {
                "workload": {
                    "kind": "StatefulSet",
                    "replicas": 0,
                    "template": {
                        "spec": {"containers": [{"name": "asya-runtime", "image": "a:2"}]}
                    },
                }
            }
        },
    )

    async def switched() -> bool:
        obj = await get_asya(custom, kube_namespace, "svc")
        await apps.read_namespaced_stateful_set("svc", kube_namespace)
        assert await missing(apps.read_namespaced_deployment("svc", kube_namespace)), obj["status"]
        obj = await get_asya(custom, kube_namespace, "svc")
        assert obj["status"]["managedObjects"] == ["Service/svc-headless", "StatefulSet/svc"]
        return True

    await eventually(switched)


async def test_second_reconcile_writes_nothing(
    kube_api: Any,
    kube_namespace: str,
    custom: Any,
    asya_body: Any,
    run_controller: Any,
    eventually: Any,
    counting: Any,
) -> None:
    controller = run_controller()
    await custom.create_namespaced_custom_object(
        G, V, kube_namespace, P, asya_body("idem", scaling={"enabled": True})
    )
    await eventually(lambda: _ready(custom, kube_namespace, "idem"))
    await asyncio.wait_for(controller.idle.wait(), 30)
    counting.counts.clear()
    counting.calls.clear()
    await controller.reconcile(kube_namespace, "idem")
    writes = {m: n for m, n in counting.counts.items() if m != "GET"}
    # Server-side apply of unchanged objects is a PATCH that changes nothing; no status write.
    assert writes == {"PATCH": 3}, [c for c in counting.calls if c[0] != "GET"]
    before = await get_asya(custom, kube_namespace, "idem")
    await controller.reconcile(kube_namespace, "idem")
    after = await get_asya(custom, kube_namespace, "idem")
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    dep = await client.AppsV1Api(kube_api).read_namespaced_deployment("idem", kube_namespace)
    assert dep.metadata.generation == 1


async def _ready(custom: Any, ns: str, name: str) -> bool:
    obj = await get_asya(custom, ns, name)
    return condition(obj, "Ready")["status"] == "True"


async def test_apply_failure_and_broker_failure_become_conditions(
    kube_api: Any,
    kube_namespace: str,
    custom: Any,
    asya_body: Any,
    run_controller: Any,
    eventually: Any,
) -> None:
    run_controller(url="amqp://guest:guest@127.0.0.1:1/")  # nothing listens there
    bad_template = {
        "spec": {"containers": [{"name": "asya-runtime"}]}
    }  # no image: Deployment refused
    await custom.create_namespaced_custom_object(
        G, V, kube_namespace, P, asya_body("broken", workload={"template": bad_template})
    )

    async def reported() -> bool:
        obj = await get_asya(custom, kube_namespace, "broken")
        workload, queue, ready = (
            condition(obj, t) for t in ("WorkloadReady", "QueueReady", "Ready")
        )
        assert (workload["status"], workload["reason"]) == ("False", "ApplyFailed")
        assert "image" in workload["message"]
        assert (queue["status"], queue["reason"]) == ("False", "BrokerUnavailable")
        assert ready["status"] == "False"
        return True

    await eventually(reported)

    async def events_recorded() -> list[Any]:
        # Events are written after the status, so they may trail it a little.
        events = await client.CoreV1Api(kube_api).list_namespaced_event(kube_namespace)
        assert {e.reason for e in events.items} >= {"ApplyFailed", "BrokerUnavailable"}
        return list(events.items)

    events = await eventually(events_recorded)
    assert all(
        e.type == "Warning" for e in events if e.reason in ("ApplyFailed", "BrokerUnavailable")
    )


async def test_deletion_with_and_without_queue_cleanup(
    kube_api: Any,
    kube_namespace: str,
    custom: Any,
    asya_body: Any,
    run_controller: Any,
    eventually: Any,
    amqp_url: str,
    amqp_names: AmqpNames,
) -> None:
    run_controller()
    await custom.create_namespaced_custom_object(G, V, kube_namespace, P, asya_body("keep"))
    await custom.create_namespaced_custom_object(
        G, V, kube_namespace, P, asya_body("drop", deleteQueueOnDelete=True)
    )

    async def finalizers() -> bool:
        assert (
            FINALIZER in (await get_asya(custom, kube_namespace, "drop"))["metadata"]["finalizers"]
        )
        keep = await get_asya(custom, kube_namespace, "keep")
        # "keep" has been reconciled (its queue declared, its status current), so its missing
        # finalizer is the operator's decision, not a reconcile still to come. (It is not Ready:
        # no kubelet here runs its pod.)
        assert keep["status"]["observedGeneration"] == keep["metadata"]["generation"]
        assert condition(keep, "QueueReady")["status"] == "True"
        assert not keep["metadata"].get("finalizers")
        return True

    await eventually(finalizers)
    async with AmqpClient(amqp_url, amqp_names) as amqp:
        await eventually(lambda: _queue_exists(amqp, amqp_names.queue("drop")))
        await eventually(lambda: _queue_exists(amqp, amqp_names.queue("keep")))
        for name in ("keep", "drop"):
            await custom.delete_namespaced_custom_object(G, V, kube_namespace, P, name)

        async def gone() -> bool:
            for name in ("keep", "drop"):
                assert await missing(get_asya(custom, kube_namespace, name))
            return True

        await eventually(gone)
        assert await _queue_exists(amqp, amqp_names.queue("keep"))
    connection = await aiormq.connect(amqp_url)
    try:
        channel = await connection.channel()
        with pytest.raises(aiormq.exceptions.ChannelNotFoundEntity):
            await channel.queue_declare(amqp_names.queue("drop"), passive=True)
    finally:
        await connection.close()


async def _queue_exists(amqp: AmqpClient, queue: str) -> bool:
    try:
        await amqp.depth(queue)
    except aiormq.exceptions.ChannelNotFoundEntity:
        return False
    return True


async def test_restarted_operator_picks_up(
    kube_api: Any,
    kube_namespace: str,
    custom: Any,
    asya_body: Any,
    run_controller: Any,
    eventually: Any,
) -> None:
    first = run_controller()
    await custom.create_namespaced_custom_object(
        G,
        V,
        kube_namespace,
        P,
        asya_body(
            "one",
            workload={
                "replicas": 0,
                "template": {"spec": {"containers": [{"name": "asya-runtime", "image": "i:1"}]}},
            },
        ),
    )
    await eventually(lambda: _ready(custom, kube_namespace, "one"))
    first.stop.set()
    await asyncio.sleep(0.2)
    # While no operator runs: a new resource, and a change to the old one.
    await custom.create_namespaced_custom_object(
        G,
        V,
        kube_namespace,
        P,
        asya_body(
            "two",
            workload={
                "replicas": 0,
                "template": {"spec": {"containers": [{"name": "asya-runtime", "image": "i:1"}]}},
            },
        ),
    )
    await merge_patch(custom, kube_namespace, "one", {"spec": {"runtime": {"timeout": 7}}})
    run_controller()
    apps = client.AppsV1Api(kube_api)

    async def caught_up() -> bool:
        await apps.read_namespaced_deployment("two", kube_namespace)
        dep = await apps.read_namespaced_deployment("one", kube_namespace)
        env = {e.name: e.value for e in dep.spec.template.spec.containers[1].env}
        assert env["ASYA_RUNTIME_TIMEOUT"] == "7"
        one = await get_asya(custom, kube_namespace, "one")
        assert one["status"]["observedGeneration"] == one["metadata"]["generation"]
        return True

    await eventually(caught_up)


async def test_built_keda_objects_pass_the_real_keda_schema(
    kube_api: Any,
    kube_namespace: str,
    asya_body: Any,
) -> None:
    """Builders against the API server's schemas: KEDA's real CRDs when shared/ has them."""
    from asya_operator.builders import Actor, desired_objects

    for spec in (
        {"scaling": {"enabled": True}},
        {
            "workload": {
                "kind": "Job",
                "template": {"spec": {"containers": [{"name": "asya-runtime", "image": "i"}]}},
            },
            "scaling": {"enabled": True},
        },
        {
            "workload": {
                "kind": "StatefulSet",
                "template": {"spec": {"containers": [{"name": "asya-runtime", "image": "i"}]}},
            }
        },
    ):
        body = asya_body("check", **spec)
        body["metadata"].update(
            namespace=kube_namespace, uid="00000000-0000-0000-0000-000000000001"
        )
        for obj in desired_objects(Actor.from_resource(body)):
            obj["metadata"].pop("ownerReferences")  # the owner does not exist in a dry run
            await server_side_apply(kube_api, obj)


async def test_resources_scheduling_and_warm_up_reach_the_deployment(
    kube_api: Any,
    kube_namespace: str,
    custom: Any,
    asya_body: Any,
    run_controller: Any,
    eventually: Any,
) -> None:
    """The first-class fields pass the CRD, and the API server takes the Deployment they build
    (an extended resource must have limits equal to requests, a whole number)."""
    run_controller()
    body = asya_body(
        "gpu",
        runtime={
            "startupTimeout": 300,
            "resources": {
                "cpu": "2",
                "memory": "4Gi",
                "gpu": 1,
                "gpuResource": "example.com/fake-gpu",
            },
        },
        scheduling={
            "nodeSelector": {"pool": "gpu"},
            "tolerations": [{"key": "example.com/fake-gpu", "operator": "Exists"}],
            "runtimeClassName": "nvidia",
        },
    )
    await custom.create_namespaced_custom_object(G, V, kube_namespace, P, body)
    apps = client.AppsV1Api(kube_api)

    async def built() -> Any:
        return await apps.read_namespaced_deployment("gpu", kube_namespace)

    pod = (await eventually(built)).spec.template.spec
    containers = {c.name: c for c in pod.containers}
    resources = containers["asya-runtime"].resources
    assert resources.requests == {"cpu": "2", "memory": "4Gi", "example.com/fake-gpu": "1"}
    assert resources.limits == {"memory": "4Gi", "example.com/fake-gpu": "1"}
    assert pod.node_selector == {"pool": "gpu"}
    assert [(t.key, t.operator) for t in pod.tolerations] == [("example.com/fake-gpu", "Exists")]
    assert pod.runtime_class_name == "nvidia"
    sidecar = containers["asya-sidecar"]
    assert {e.name: e.value for e in sidecar.env}["ASYA_RUNTIME_WAIT"] == "300"
    probe = sidecar.startup_probe
    assert (probe.http_get.path, probe.period_seconds, probe.failure_threshold) == (
        "/healthz",
        5,
        61,
    )
