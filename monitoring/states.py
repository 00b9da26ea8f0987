"""The three states a monitored number can be in, and how they combine."""

from __future__ import annotations

from typing import Literal

State = Literal["ok", "watch", "act", "unknown"]
#: Worst first when combining: one "act" anywhere makes the whole report "act".
_RANK: dict[str, int] = {"unknown": 0, "ok": 1, "watch": 2, "act": 3}


def above(value: float | None, watch: float, act: float) -> State:
    """For numbers where larger is worse (PSI, ECE, an AUC drop)."""
    if value is None:
        return "unknown"
    if value >= act:
        return "act"
    return "watch" if value >= watch else "ok"


def below(value: float | None, watch: float, act: float) -> State:
    """For numbers where smaller is worse (live precision over promised precision)."""
    if value is None:
        return "unknown"
    if value < act:
        return "act"
    return "watch" if value < watch else "ok"


def worst(states: list[State]) -> State:
    """The most severe state; ``unknown`` only when nothing could be judged."""
    return max(states, key=_RANK.__getitem__, default="unknown")
