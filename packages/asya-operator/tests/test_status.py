"""The status a reconcile writes, its events and its finalizer edits: pure, case by case."""

from __future__ import annotations

from typing import Any

import pytest

from asya_operator.conditions import (
    Cond,
    Observed,
    RefusedStatus,
    Replicas,
    desired_status,
    replicas_state,
    scaling_condition,
    status_body,
    unchanged,
)
from asya_operator.events import event_body, noteworthy
from asya_operator.finalizers import FINALIZER, finalizer_patch, finalizers_with
from asya_operator.model import AsyaStatus, ScalingSpec
from asya_operator.reconcile import APPLY_RETRY, BROKER_RETRY, retry_after

OK = [Cond("Ready", True, "Reconciled", "all"), Cond("QueueReady", True, "Declared", "q")]
OBSERVED = Observed(
    queue="q", managed_objects=("Deployment/a",), queue_depth=None, replicas=Replicas(2, 1)
)


def test_a_valid_specs_status_writes_every_field() -> None:
    status = desired_status({}, OK, generation=3, now="t1", observed=OBSERVED)
    assert isinstance(status, AsyaStatus)
    body = status_body(status)
    assert body == {
        "conditions": [
            {"type": "Ready", "status": "True", "reason": "Reconciled", "message": "all",
             "observedGeneration": 3, "lastTransitionTime": "t1"},
            {"type": "QueueReady", "status": "True", "reason": "Declared", "message": "q",
             "observedGeneration": 3, "lastTransitionTime": "t1"},
        ],
        "observedGeneration": 3,
        "queue": "q",
        "replicas": 2,
        "readyReplicas": 1,
        "queueDepth": None,  # a merge patch's null: an unknown depth is cleared
        "managedObjects": ["Deployment/a"],
    }  # fmt: skip


def test_counts_of_zero_are_written() -> None:
    observed = Observed(queue="q", managed_objects=(), queue_depth=0, replicas=Replicas())
    body = status_body(desired_status({}, OK, generation=1, now="t", observed=observed))
    assert (body["replicas"], body["readyReplicas"], body["queueDepth"]) == (0, 0, 0)
    assert body["managedObjects"] == []


def test_a_refused_spec_writes_only_conditions_and_generation() -> None:
    refused = [Cond("Ready", False, "InvalidSpec", "bad")]
    current = {"queue": "q", "managedObjects": ["Deployment/a"]}
    status = desired_status(current, refused, generation=4, now="t", observed=None)
    assert isinstance(status, RefusedStatus)
    assert set(status_body(status)) == {"conditions", "observedGeneration"}


def test_an_unchanged_status_is_not_written_again() -> None:
    first = status_body(desired_status({}, OK, generation=1, now="t1", observed=OBSERVED))
    again = status_body(desired_status(first, OK, generation=1, now="t2", observed=OBSERVED))
    assert again == first  # transition times kept
    assert unchanged(first, again)
    bumped = status_body(desired_status(first, OK, generation=2, now="t2", observed=OBSERVED))
    assert not unchanged(first, bumped)


def test_replicas_and_scaling_conditions() -> None:
    cond, counts = replicas_state({"replicas": 3, "readyReplicas": 2}, 2)
    assert (cond.ok, cond.reason, cond.message, counts) == (
        True, "ReplicasReady", "2/2 replicas ready", Replicas(3, 2),
    )  # fmt: skip
    cond, counts = replicas_state({}, 1)
    assert (cond.ok, cond.reason, counts) == (False, "Progressing", Replicas(0, 0))
    off = scaling_condition(ScalingSpec(), cond)
    assert (off.ok, off.reason) == (True, "Disabled")
    on = ScalingSpec(enabled=True, min_replicas=0, max_replicas=4, queue_length=5)
    assert scaling_condition(on, cond).message == "0..4 replicas, 5 messages each"
    failed = scaling_condition(on, Cond("WorkloadReady", False, "ApplyFailed", "no image"))
    assert (failed.ok, failed.reason, failed.message) == (False, "ApplyFailed", "no image")


@pytest.mark.parametrize(
    ("workload", "queue", "delay"),
    [
        ("ReplicasReady", "Declared", None),
        ("ApplyFailed", "Declared", APPLY_RETRY),
        ("ReplicasReady", "BrokerUnavailable", BROKER_RETRY),
        ("ApplyFailed", "BrokerUnavailable", BROKER_RETRY),
    ],
)
def test_retry_after(workload: str, queue: str, delay: float | None) -> None:
    ok = workload != "ApplyFailed"
    assert retry_after(Cond("WorkloadReady", ok, workload), Cond("QueueReady", True, queue)) == (
        delay
    )


def test_events_for_new_failures_and_for_ready_only() -> None:
    current: list[dict[str, Any]] = [
        {"type": "QueueReady", "status": "False"},
        {"type": "Ready", "status": "False"},
    ]
    wanted = [
        Cond("Ready", True, "Reconciled"),
        Cond("WorkloadReady", True, "ReplicasReady"),  # a first True: no event
        Cond("QueueReady", False, "BrokerUnavailable"),  # still failing: already told
        Cond("ScalingReady", False, "ApplyFailed"),  # a new failure
    ]
    assert [c.reason for c in noteworthy(current, wanted)] == ["Reconciled", "ApplyFailed"]


def test_event_body() -> None:
    obj = {"metadata": {"name": "a", "namespace": "ml", "uid": "u"}}
    event = event_body(obj, "Warning", "ApplyFailed", "x" * 2000, now="t")
    assert event["involvedObject"] == {
        "apiVersion": "asya.sh/v1alpha1", "kind": "Asya", "name": "a", "namespace": "ml",
        "uid": "u",
    }  # fmt: skip
    assert event["metadata"] == {"generateName": "a.", "namespace": "ml"}
    assert (event["type"], len(event["message"]), event["lastTimestamp"]) == ("Warning", 1024, "t")


def test_finalizer_edits() -> None:
    meta: dict[str, Any] = {"finalizers": ["other"], "resourceVersion": "7"}
    assert finalizers_with(meta, False) is None
    added = finalizers_with(meta, True)
    assert added == ["other", FINALIZER]
    assert finalizers_with({"finalizers": added}, True) is None
    assert finalizers_with({"finalizers": added}, False) == ["other"]
    assert finalizer_patch(meta, ["other"]) == {
        "metadata": {"finalizers": ["other"], "resourceVersion": "7"}
    }
