from asya_gateway.fanout import Branches


def test_single_message() -> None:
    b = Branches(None)
    assert not b.complete("r")
    b.ended("r", {"ok": True, "result": 1})
    assert b.complete("r")
    assert b.leaves("r") == [{"id": "r", "ok": True, "result": 1}]


def test_nested_fan_out_in_any_order() -> None:
    b = Branches(None)
    b.ended("c2", {"ok": True, "result": "two"})  # a terminal before its fan-out event
    b.fanned_out("r", ["c1", "c2"])
    assert not b.complete("r")
    b.fanned_out("c1", ["g1", "g2"])
    b.ended("g1", {"ok": True, "result": "g1"})
    assert not b.complete("r")
    b.ended("g2", {"ok": False, "error": {"error": "x"}})
    b.ended("g2", {"ok": True, "result": "duplicate ignored"})
    assert b.complete("r")
    assert [leaf["id"] for leaf in b.leaves("r")] == ["g1", "g2", "c2"]
    assert b.leaves("r")[1]["ok"] is False


def test_empty_fan_out_and_cycles() -> None:
    b = Branches(None)
    b.fanned_out("r", [])
    assert b.complete("r")
    c = Branches(None)
    c.fanned_out("r", ["r"])
    assert not c.complete("r")
