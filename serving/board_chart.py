"""A lead's score history as a small SVG chart, computed here and drawn by the template.

No JavaScript and no charting library: the board's pages forbid scripts, and a line of
fifty points needs none. This module turns scores and outcomes into coordinates and
labels (plain numbers and fixed words); ``lead.html`` writes them as SVG elements with
presentation attributes, which the page's Content-Security-Policy allows (inline
``style`` would not be). The chart repeats what the history table says, for the eye;
the table stays the accessible source, and the SVG carries a title and a description.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from scorelog.rows import OutcomeRow, ScoreRow

WIDTH, HEIGHT = 640, 200
#: Room for the axis labels: left, right, top, bottom.
LEFT, RIGHT, TOP, BOTTOM = 36, 12, 12, 28


@dataclass(frozen=True)
class Point:
    x: float
    y: float
    score: int
    grade: str
    label: str


@dataclass(frozen=True)
class Band:
    """A horizontal line at the lowest score of a grade (the served model's policy)."""

    y: float
    grade: str
    score: float


@dataclass(frozen=True)
class Marker:
    """A vertical tick at the time an outcome happened."""

    x: float
    label: str
    rejected: bool


@dataclass(frozen=True)
class Chart:
    width: int
    height: int
    points: list[Point]
    bands: list[Band]
    markers: list[Marker]
    y_ticks: list[tuple[float, int]]
    x_labels: list[tuple[float, str, str]]  # (x, text anchor, text)
    description: str

    @property
    def polyline(self) -> str:
        return " ".join(f"{p.x:.1f},{p.y:.1f}" for p in self.points)


def score_chart(
    history: Sequence[ScoreRow],
    outcomes: Sequence[OutcomeRow] = (),
    grade_bands: Mapping[str, float] | None = None,
) -> Chart | None:
    """The chart of ``history`` (any order), or None when there is nothing to draw."""
    scores = sorted(history, key=lambda r: r.scored_at)
    if not scores:
        return None
    # The time axis spans the scores and the outcomes (a rejection after the last score
    # is what the chart should show most).
    moments = [r.scored_at for r in scores] + [o.occurred_at for o in outcomes]
    start, end = min(moments), max(moments)
    span = (end - start).total_seconds()

    def x_of(when: datetime) -> float:
        if span <= 0:
            return LEFT + (WIDTH - LEFT - RIGHT) / 2
        return LEFT + (when - start).total_seconds() / span * (WIDTH - LEFT - RIGHT)

    def y_of(score: float) -> float:
        return TOP + (100 - score) / 100 * (HEIGHT - TOP - BOTTOM)

    points = [
        Point(x_of(r.scored_at), y_of(r.score), r.score, r.grade, _day(r.scored_at)) for r in scores
    ]
    bands = [
        Band(y_of(score), grade, score)
        for grade, score in sorted((grade_bands or {}).items())
        if 0 < score < 100
    ]
    markers = [
        Marker(x_of(o.occurred_at), o.outcome.replace("_", " "), o.reason is not None)
        for o in outcomes
    ]
    x_labels = [(x_of(start), "start", _day(start))]
    if span > 0:
        x_labels.append((x_of(end), "end", _day(end)))
    return Chart(
        width=WIDTH,
        height=HEIGHT,
        points=points,
        bands=bands,
        markers=markers,
        y_ticks=[(y_of(v), v) for v in (0, 50, 100)],
        x_labels=x_labels,
        description=_describe(scores),
    )


def _describe(scores: Sequence[ScoreRow]) -> str:
    first, last = scores[0], scores[-1]
    if len(scores) == 1:
        return f"One score: {last.score} (grade {last.grade}) on {_day(last.scored_at)}."
    low = min(r.score for r in scores)
    high = max(r.score for r in scores)
    return (
        f"{len(scores)} scores from {_day(first.scored_at)} to {_day(last.scored_at)}: "
        f"from {first.score} to {last.score} (grade {last.grade}), lowest {low}, highest {high}."
    )


def _day(when: datetime) -> str:
    return when.strftime("%Y-%m-%d")
