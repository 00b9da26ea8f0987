"""Decision thresholds, chosen on VALIDATION data by an explicitly stated policy.

A probability becomes an action only through a threshold, and a threshold is a
business decision. So it is never a magic 0.5: it is chosen by a policy the user
states, on the validation split (never the test split, whose job is to report the
honest expected precision/recall of that choice):

* ``PrecisionTarget`` ("precision:0.6"): the lowest threshold whose flagged leads
  convert at least 60 % of the time, i.e. the most recall that target allows.
* ``Capacity`` ("top:5%", "top:0.05", "weekly:200"): sales can work the top 5 % of
  leads, or 200 leads a week; the threshold flags at most that many.

Category rule (one category per lead, used by scoring and the model card)::

    sql      if p_sql >= t_sql
    mql      elif p_mql >= t_mql
    nurture  otherwise

The model guarantees ``P(SQL) <= P(MQL)`` per lead (a lead cannot become sales-
qualified without first being marketing-qualified). The rule is a priority cascade,
so it yields exactly one category for *any* pair of thresholds; see
:func:`check_thresholds` for why no ordering between ``t_sql`` and ``t_mql`` is imposed.

The expected precision/recall stored with each threshold describe the set
``p_stage >= t_stage`` for that stage alone, not the final category (the ``mql``
category excludes leads already labelled ``sql``).

Grade bands (A/B/C/D) are a separate, policy-free view: fixed shares of the
validation score distribution, so "A" always means "top 10 % of leads as scored at
training time".
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import numpy as np
import numpy.typing as npt
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from training.evaluation import FloatArray, IntArray, threshold_stats, validate_inputs

#: Slack for float comparisons of ratios of counts against user targets.
_TOL = 1e-12


# --------------------------------------------------------------------------- policies


class PrecisionTarget(BaseModel):
    """Flag as many leads as possible while their precision stays >= ``target``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["precision"] = "precision"
    target: float = Field(gt=0.0, le=1.0, description="Minimum share of flagged leads converting.")


class Capacity(BaseModel):
    """Flag at most what sales can work: a share of leads, or a number per week.

    Exactly one of ``top_share`` and ``per_week`` must be set. ``per_week`` is turned
    into a share using the validation period's length in weeks, so it needs ``weeks``
    at :func:`choose_threshold` time.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["capacity"] = "capacity"
    top_share: float | None = Field(default=None, gt=0.0, le=1.0, description="0.05 = top 5 %.")
    per_week: int | None = Field(default=None, gt=0, description="Leads sales can work per week.")

    @model_validator(mode="after")
    def _exactly_one(self) -> Capacity:
        if (self.top_share is None) == (self.per_week is None):
            raise ValueError("Capacity needs exactly one of top_share and per_week")
        return self


ThresholdPolicy = Annotated[PrecisionTarget | Capacity, Field(discriminator="kind")]


class _PolicyBox(BaseModel):
    """Wrapper so the discriminated union validates through a model (typed for mypy)."""

    policy: ThresholdPolicy


def policy_from_dict(data: dict[str, Any]) -> ThresholdPolicy:
    """Rebuild a policy from ``ChosenThreshold.policy`` (or a config file)."""
    return _PolicyBox.model_validate({"policy": data}).policy


_PRECISION_RE = re.compile(r"^precision:(?P<num>[0-9]*\.?[0-9]+)(?P<pct>%?)$")
_TOP_RE = re.compile(r"^top:(?P<num>[0-9]*\.?[0-9]+)(?P<pct>%?)$")
_WEEKLY_RE = re.compile(r"^weekly:(?P<num>[0-9]+)$")
_POLICY_HELP = (
    "expected one of 'precision:0.6' (or 'precision:60%'), 'top:5%', 'top:0.05', 'weekly:200'"
)


def _fraction(num: str, pct: str, text: str) -> float:
    value = float(num)
    if pct:
        return value / 100.0
    if value > 1.0:
        raise ValueError(
            f"ambiguous threshold policy {text!r}: a fraction must be <= 1 "
            f"(write '{num}%' for a percentage)"
        )
    return value


def parse_policy(text: str) -> ThresholdPolicy:
    """Parse a CLI policy string such as ``precision:0.6``, ``top:5%`` or ``weekly:200``.

    Raises ValueError with the accepted forms when the string is not understood or
    its number is out of range.
    """
    cleaned = text.strip().lower().replace(" ", "")
    try:
        if m := _PRECISION_RE.match(cleaned):
            return PrecisionTarget(target=_fraction(m["num"], m["pct"], text))
        if m := _TOP_RE.match(cleaned):
            return Capacity(top_share=_fraction(m["num"], m["pct"], text))
        if m := _WEEKLY_RE.match(cleaned):
            return Capacity(per_week=int(m["num"]))
    except ValidationError as exc:
        reasons = "; ".join(str(err["msg"]) for err in exc.errors())
        raise ValueError(f"invalid threshold policy {text!r}: {reasons}") from None
    raise ValueError(f"unrecognised threshold policy {text!r}: {_POLICY_HELP}")


def describe_policy(policy: dict[str, Any]) -> str:
    """Plain-words description of a policy dict, for reports and the model card."""
    parsed = policy_from_dict(policy)
    if isinstance(parsed, PrecisionTarget):
        return f"precision >= {_as_percent(parsed.target)}"
    if parsed.top_share is not None:
        return f"top {_as_percent(parsed.top_share)} of leads"
    return f"top {parsed.per_week} leads per week"


def _as_percent(share: float) -> str:
    """0.6 -> '60%', 0.999 -> '99.9%': no rounding that would misstate a target."""
    return f"{round(share * 100, 6):g}%"


# --------------------------------------------------------------------------- choosing


@dataclass(frozen=True)
class ChosenThreshold:
    """A stage's threshold with the validation-set expectations that justified it.

    ``met`` is False when the policy could not be honoured exactly: the precision
    target is unreachable at any threshold, or tied scores at the top exceed capacity.
    """

    stage: str
    threshold: float
    policy: dict[str, Any]
    met: bool
    expected_precision: float
    expected_recall: float
    expected_volume_share: float
    expected_per_week: float | None


@dataclass(frozen=True)
class _Cutoffs:
    """Every distinct candidate threshold, highest first, with cumulative counts."""

    threshold: FloatArray
    volume: IntArray
    true_positives: IntArray


def _cutoffs(y: IntArray, p: FloatArray) -> _Cutoffs:
    """Candidate thresholds are the observed scores: ``p >= score`` flags its tie group."""
    order = np.argsort(-p, kind="stable")
    p_sorted = p[order]
    tp_cum = np.cumsum(y[order])
    # Last position of each group of equal scores: the volume if that score is the cut.
    last = np.flatnonzero(np.append(p_sorted[1:] != p_sorted[:-1], True))
    return _Cutoffs(
        threshold=p_sorted[last],
        volume=(last + 1).astype(np.int64),
        true_positives=tp_cum[last].astype(np.int64),
    )


def _precision_threshold(cuts: _Cutoffs, target: float) -> tuple[float, bool]:
    precision = cuts.true_positives / cuts.volume
    meets = np.flatnonzero(precision >= target - _TOL)
    if meets.size:
        # Recall only grows as the threshold falls, so the lowest qualifying threshold
        # (the last candidate, candidates being sorted high to low) maximises recall.
        return float(cuts.threshold[meets[-1]]), True
    best = np.flatnonzero(precision >= precision.max() - _TOL)
    return float(cuts.threshold[best[-1]]), False


def _capacity_share(policy: Capacity, n: int, weeks: float | None) -> float:
    if policy.top_share is not None:
        return policy.top_share
    if weeks is None:
        raise ValueError("a per-week capacity needs weeks= (the validation period's length)")
    assert policy.per_week is not None  # guaranteed by Capacity's validator
    leads_per_week = n / weeks
    return min(1.0, policy.per_week / leads_per_week)


def _capacity_threshold(cuts: _Cutoffs, n: int, share: float) -> tuple[float, bool]:
    """Lowest threshold flagging at most ``floor(share * n)`` leads (at least one).

    Capacity is a ceiling, so ties at the cut are left out rather than overflowing
    it; only when the top tie group alone exceeds capacity is it flagged anyway,
    with ``met=False``.
    """
    allowed = max(1, math.floor(round(share * n, 9)))
    fits = np.flatnonzero(cuts.volume <= allowed)
    if fits.size:
        return float(cuts.threshold[fits[-1]]), True
    return float(cuts.threshold[0]), False


def choose_threshold(
    stage: str,
    y_val: npt.ArrayLike,
    p_val: npt.ArrayLike,
    policy: ThresholdPolicy,
    *,
    weeks: float | None = None,
) -> ChosenThreshold:
    """Choose ``stage``'s threshold on validation outcomes/probabilities by ``policy``.

    ``weeks`` is the validation period's length; it is required for a per-week
    capacity and, when given, also fills ``expected_per_week`` for other policies.
    The threshold is always an observed score, flagging leads with ``p >= threshold``.
    """
    if not stage:
        raise ValueError("stage must be a non-empty name such as 'mql' or 'sql'")
    y, p = validate_inputs(y_val, p_val)
    if not y.any():
        raise ValueError(
            f"cannot choose a threshold for stage {stage!r}: "
            "the validation data has no positive outcomes"
        )
    if weeks is not None and not weeks > 0:
        raise ValueError(f"weeks must be positive, got {weeks}")
    cuts = _cutoffs(y, p)
    if isinstance(policy, PrecisionTarget):
        threshold, met = _precision_threshold(cuts, policy.target)
    else:
        share = _capacity_share(policy, len(y), weeks)
        threshold, met = _capacity_threshold(cuts, len(y), share)
    stats = threshold_stats(y, p, threshold)
    return ChosenThreshold(
        stage=stage,
        threshold=threshold,
        policy=policy.model_dump(exclude_none=True),
        met=met,
        expected_precision=stats.precision,
        expected_recall=stats.recall,
        expected_volume_share=stats.volume_share,
        expected_per_week=stats.volume / weeks if weeks is not None else None,
    )


def check_thresholds(chosen: list[ChosenThreshold]) -> None:
    """Refuse a set of stage thresholds the category cascade cannot use; change nothing.

    Checked: stage names are unique (two thresholds for one stage would make the cascade
    ambiguous) and every threshold is a finite probability.

    No ordering between stage thresholds is required, so none is imposed:

    * The category rule is a priority cascade (``sql`` first, then ``mql``, else
      ``nurture``), so it assigns exactly one category for any ``t_sql``/``t_mql``.
    * If ``t_sql >= t_mql``, every ``sql`` lead also clears the MQL threshold
      (``p_mql >= p_sql >= t_sql >= t_mql``): the intuitive nesting.
    * If ``t_sql < t_mql``, some ``sql`` leads have ``p_mql < t_mql``. That is still
      consistent: the ``sql`` label claims only ``P(SQL) >= t_sql``, which the SQL
      policy chose. Raising ``t_sql`` to ``t_mql`` would silently break the SQL policy
      (its capacity or precision trade-off) to satisfy an ordering that changes no
      lead's correctness.
    """
    seen: set[str] = set()
    for item in chosen:
        if item.stage in seen:
            raise ValueError(f"stage {item.stage!r} has more than one threshold")
        seen.add(item.stage)
        if not 0.0 <= item.threshold <= 1.0:
            raise ValueError(
                f"threshold for stage {item.stage!r} must be within [0, 1], got {item.threshold}"
            )


# --------------------------------------------------------------------------- grades


#: The grades with a lower bound; every score below C's is D (the model's GRADES).
_BANDED_GRADES = ("A", "B", "C")


def grade_bands(
    scores_val: npt.ArrayLike, shares: tuple[float, float, float] = (0.10, 0.25, 0.50)
) -> dict[str, float]:
    """Minimum 0-100 score for each grade, from validation score quantiles.

    ``shares`` are cumulative: with the default, A is the top 10 %, B the next 15 %,
    C the next 25 %, and D (not returned) the remaining half. A lead gets the first
    grade whose minimum it reaches. Fixing bands on validation scores keeps a grade's
    meaning stable when scoring new leads, instead of re-ranking every batch.
    Quantiles use linear interpolation, so on ``0..100`` the bands are exactly 90,
    75 and 50.
    """
    scores = np.asarray(scores_val, dtype=np.float64)
    if scores.ndim != 1 or scores.size == 0:
        raise ValueError(f"scores_val must be a non-empty 1-D array, got shape {scores.shape}")
    if np.isnan(scores).any():
        raise ValueError("scores_val contains NaN values")
    if scores.min() < 0.0 or scores.max() > 100.0:
        raise ValueError(
            f"scores_val must be within [0, 100]; got min {scores.min()}, max {scores.max()}"
        )
    shares_arr = np.asarray(shares, dtype=np.float64)
    if shares_arr.shape != (len(_BANDED_GRADES),):
        raise ValueError(f"shares needs exactly {len(_BANDED_GRADES)} values: the tops of A, B, C")
    if (shares_arr <= 0).any() or (shares_arr >= 1).any() or (np.diff(shares_arr) <= 0).any():
        raise ValueError(f"shares must be strictly increasing within (0, 1), got {shares}")
    cuts = np.quantile(scores, 1.0 - shares_arr)
    cuts = np.minimum.accumulate(cuts)  # monotone by construction; guard float noise
    return {grade: float(cut) for grade, cut in zip(_BANDED_GRADES, cuts, strict=True)}


def weeks_spanned(times: pd.Series) -> float | None:
    """Length in weeks of the period ``times`` covers (newest minus oldest).

    None when fewer than two distinct times are known, since no rate per week follows
    from a single instant. This is the measure training uses to turn ``weekly:N`` into
    a share of the validation rows.
    """
    stamps = pd.to_datetime(times, utc=True).dropna()
    if len(stamps) < 2:
        return None
    span = (stamps.max() - stamps.min()) / pd.Timedelta(weeks=1)
    return float(span) if span > 0 else None
