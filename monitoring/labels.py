"""Scores become labelled rows: each logged score joined to what happened within the horizon.

The rule, the same for training from the log and for live calibration:

* a score at time ``t`` is a row only once its horizon has passed (``t + horizon <= now``):
  before that, "no outcome yet" is not "no";
* its label for stage ``s`` is 1 when the lead reached ``s`` (or a later stage) at a time
  in ``(t, t + horizon]``, else 0 - so a lead never scored again and with no outcome is a
  negative exactly once its horizon passed;
* a score of a lead that had already reached the first scored stage at ``t`` is dropped
  (as in file training: nobody needs that score, and it teaches nothing);
* a rejection by sales (``disqualified`` with a reason) is a negative (``label``) or
  removes the lead's rows from training (``exclude``: a duplicate or spam lead is not a
  lead that failed to convert), per reason, as the config says.

Outcomes map to stages: ``stage_reached`` names its stage; ``qualified`` (sales confirmed
the lead) is the last scored stage (SQL); ``won`` is the last lifecycle stage. Other
outcomes (``contacted``, ``lost``) carry no stage and change no label.

Everything is vectorised: one pass over the outcomes to a per-lead table of first times,
then array comparisons for millions of scores.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from features.spec import FeatureSpec, LifecycleLabel
from monitoring.rejections import DEFAULT_REJECTIONS, RejectionUse
from scorelog.history import LoggedOutcome

REJECTION_OUTCOMES = frozenset({"disqualified", "lost"})
_NEVER = np.iinfo(np.int64).max
DAY_NS = 86_400 * 10**9


@dataclass(frozen=True)
class LabelRules:
    """How outcomes become labels for one spec."""

    stages: list[str]  # the ladder, lowest first; index 0 is "no stage reached"
    scored: list[str]
    horizon_days: float
    rejections: Mapping[str, RejectionUse] = field(default_factory=lambda: DEFAULT_REJECTIONS)
    #: What a rejection without a reason (or an unknown reason) counts as.
    default_rejection: RejectionUse = "label"

    @classmethod
    def for_spec(
        cls,
        spec: FeatureSpec,
        horizon_days: float,
        rejections: Mapping[str, RejectionUse] | None = None,
    ) -> LabelRules:
        if isinstance(spec.label, LifecycleLabel):
            stages = list(spec.label.stages)
        else:
            stages = ["", spec.label.stage]
        return cls(
            stages,
            list(spec.scored_stages),
            horizon_days,
            dict(DEFAULT_REJECTIONS if rejections is None else rejections),
        )

    def stage_index(self, outcome: LoggedOutcome) -> int | None:
        """The ladder index an outcome says was reached, or None if it names no stage."""
        if outcome.outcome == "stage_reached" and outcome.stage in self.stages:
            return self.stages.index(outcome.stage)
        if outcome.outcome == "qualified":
            return self.stages.index(self.scored[-1])
        if outcome.outcome == "won":
            return len(self.stages) - 1
        return None

    def excludes(self, outcome: LoggedOutcome) -> bool:
        if outcome.outcome not in REJECTION_OUTCOMES and outcome.reason is None:
            return False
        use = self.rejections.get(outcome.reason or "", self.default_rejection)
        return use == "exclude"


@dataclass(frozen=True)
class OutcomeTable:
    """Per lead: the first time each scored stage was reached, and the first exclusion."""

    lead_ids: pd.Index
    first_reached: np.ndarray  # (leads, scored stages) int64 ns, _NEVER when not reached
    first_excluded: np.ndarray  # (leads,) int64 ns

    @classmethod
    def build(cls, outcomes: Iterable[LoggedOutcome], rules: LabelRules) -> OutcomeTable:
        leads: list[str] = []
        stage_idx: list[int] = []
        at: list[int] = []
        excluded: dict[str, int] = {}
        for o in outcomes:
            ns = _ns(o.occurred_at)
            idx = rules.stage_index(o)
            if idx is not None:
                leads.append(o.lead_id)
                stage_idx.append(idx)
                at.append(ns)
            if rules.excludes(o):
                excluded[o.lead_id] = min(ns, excluded.get(o.lead_id, _NEVER))
        index = pd.Index(sorted(set(leads) | set(excluded)))
        scored = np.array([rules.stages.index(s) for s in rules.scored])
        first = np.full((len(index), len(scored)), _NEVER, dtype=np.int64)
        if leads:
            rows = index.get_indexer(pd.Index(leads))
            idx_arr, at_arr = np.array(stage_idx), np.array(at, dtype=np.int64)
            for j, level in enumerate(scored):
                hit = idx_arr >= level  # reaching SQL means MQL was reached too
                np.minimum.at(first[:, j], rows[hit], at_arr[hit])
        first_excluded = np.full(len(index), _NEVER, dtype=np.int64)
        if excluded:
            first_excluded[index.get_indexer(pd.Index(list(excluded)))] = list(excluded.values())
        return cls(index, first, first_excluded)


@dataclass(frozen=True)
class LabelledRows:
    """Which scores are rows, and their 0/1 label per scored stage."""

    keep: np.ndarray  # positions into the scores given
    labels: np.ndarray  # (kept, stages) int8
    dropped: dict[str, int]


def label_scores(
    lead_ids: Sequence[str] | np.ndarray,
    scored_ns: np.ndarray,
    table: OutcomeTable,
    rules: LabelRules,
    now_ns: int,
) -> LabelledRows:
    """Label scores (lead, time in epoch ns) by the rules above, as of ``now_ns``."""
    scored_ns = np.asarray(scored_ns, dtype=np.int64)
    horizon_end = scored_ns + int(rules.horizon_days * DAY_NS)
    pos = table.lead_ids.get_indexer(pd.Index(np.asarray(lead_ids, dtype=object)))
    known = pos >= 0
    first = np.full((len(scored_ns), len(rules.scored)), _NEVER, dtype=np.int64)
    first[known] = table.first_reached[pos[known]]
    excluded_at = np.full(len(scored_ns), _NEVER, dtype=np.int64)
    excluded_at[known] = table.first_excluded[pos[known]]

    matured = horizon_end <= now_ns
    already = first[:, 0] <= scored_ns
    excluded = excluded_at <= horizon_end
    keep = matured & ~already & ~excluded
    labels = (first[keep] <= horizon_end[keep, None]).astype(np.int8)
    return LabelledRows(
        keep=np.flatnonzero(keep),
        labels=labels,
        dropped={
            "horizon_not_passed": int((~matured).sum()),
            "already_qualified_at_score": int((matured & already).sum()),
            "excluded_by_rejection": int((matured & ~already & excluded).sum()),
        },
    )


def _ns(value: object) -> int:
    return int(pd.Timestamp(value).value)  # type: ignore[arg-type]
