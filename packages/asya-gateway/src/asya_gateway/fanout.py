"""Pure fan-out accounting: has every branch of a job ended?

A job starts as one message (the root). A ``done`` step event with ``child_ids`` records a
fan-out; a terminal message (happy-end or error-end) or a ``done`` event with no children (an
empty fan-out) ends a branch. The job is complete when, from the root down, every message either
ended or fanned out into messages that are all complete. Events and terminal messages may arrive
in any order and more than once.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["Branches", "copied", "empty_state"]


def empty_state() -> dict[str, Any]:
    return {"children": {}, "ended": {}}


def copied(state: Mapping[str, Any]) -> dict[str, Any]:
    """A copy that :class:`Branches` may edit: its two maps are new, their values shared.

    :class:`Branches` only adds or replaces entries of ``children`` and ``ended`` and never
    edits a value (a child list, an outcome holding a result) in place, so nothing deeper is
    copied: no recursion over results, however deep they nest.
    """
    return {
        **state,
        "children": dict(state.get("children", {})),
        "ended": dict(state.get("ended", {})),
    }


class Branches:
    def __init__(self, state: dict[str, Any] | None) -> None:
        self.state: dict[str, Any] = state or empty_state()
        self.state.setdefault("children", {})
        self.state.setdefault("ended", {})

    def fanned_out(self, parent: str, children: list[str]) -> None:
        self.state["children"][parent] = list(children)

    def ended(self, message_id: str, outcome: dict[str, Any]) -> None:
        self.state["ended"].setdefault(message_id, outcome)

    def complete(self, root: str) -> bool:
        ended, children = self.state["ended"], self.state["children"]
        stack, seen = [root], set()
        while stack:
            node = stack.pop()
            if node in seen:
                return False  # a cycle cannot complete
            seen.add(node)
            if node in ended:
                continue
            if node not in children:
                return False
            stack.extend(children[node])
        return True

    def leaves(self, root: str) -> list[dict[str, Any]]:
        """Ended branches in tree order (for the job's result)."""
        ended, children = self.state["ended"], self.state["children"]
        out: list[dict[str, Any]] = []
        stack = [root]
        while stack:
            node = stack.pop(0)
            if node in ended:
                out.append({"id": node, **ended[node]})
            else:
                stack[0:0] = children.get(node, [])
        return out
