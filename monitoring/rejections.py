"""How sales' rejection reasons count in training (a light module: configs import it)."""

from __future__ import annotations

from typing import Literal

#: ``label``: the lead's rows stay, as negatives; ``exclude``: the lead's rows are dropped.
RejectionUse = Literal["label", "exclude"]

#: Reasons that say the lead was never a real prospect (a duplicate, spam) teach nothing
#: about converting, so their rows are excluded; the others are genuine "no"s.
DEFAULT_REJECTIONS: dict[str, RejectionUse] = {
    "not_a_fit": "label",
    "bad_timing": "label",
    "wrong_contact": "label",
    "duplicate": "exclude",
    "spam": "exclude",
}


def default_rejections() -> dict[str, RejectionUse]:
    """A fresh copy of :data:`DEFAULT_REJECTIONS` (for pydantic's ``default_factory``)."""
    return dict(DEFAULT_REJECTIONS)
