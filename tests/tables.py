"""Generated lead tables of the shapes real exports come in (nothing here is real data).

``leadscore init`` must cope with files nobody described: other delimiters and
encodings, no id column, a numeric "never" sentinel, yes/no or TRUE/FALSE labels,
headers with spaces, ``%`` and parentheses, a leaking status column, dates and free
text. :func:`write_table` writes one such file; the label follows a logistic model of
the before-contact columns, so a model trained on it has something real to find.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class Shape:
    """How one generated file is written."""

    delimiter: str = ","
    encoding: str = "utf-8"
    decimal: str = "."
    id_column: str | None = "Lead ID"
    label: str = "Converted"
    positive: str = "1"
    negative: str = "0"
    odd_headers: bool = False  # spaces, % and parentheses in the column names
    sentinel: float | None = None  # written instead of "never visited"


SHAPES: dict[str, Shape] = {
    "semicolon": Shape(
        delimiter=";", decimal=",", label="Signed up", positive="yes", negative="no",
        sentinel=999,
    ),
    "tab_latin1": Shape(
        delimiter="\t", encoding="latin-1", label="Won", positive="TRUE", negative="FALSE"
    ),
    "odd_headers": Shape(id_column=None, odd_headers=True, label="Converted (y/n)",
                         positive="Y", negative="N", sentinel=-1),
}  # fmt: skip


def lead_table(shape: Shape, n: int, seed: int = 0) -> pd.DataFrame:
    """The table as text, with the shape's column names and spellings."""
    rng = np.random.default_rng(seed)
    source = rng.choice(["Referral", "Organic Search", "Paid Ads", "Webinar", "Trade Fair"], n,
                        p=[0.15, 0.3, 0.3, 0.15, 0.1])  # fmt: skip
    region = rng.choice(["Nord", "Süd", "Ost", "West", "Île-de-France"], n)
    visits = rng.poisson(4, n)
    minutes = np.round(rng.gamma(2.0, 6.0, n), 1)
    opened = np.round(rng.beta(2, 5, n) * 100, 1)
    days_since = rng.integers(0, 60, n).astype(float)
    newsletter = rng.random(n) < 0.4
    employees = np.round(rng.lognormal(4, 1.2, n))
    logit = (
        -1.6
        + 0.9 * (source == "Referral") + 0.5 * (source == "Webinar") - 0.4 * (source == "Paid Ads")
        + 0.18 * np.minimum(visits, 12) + 0.04 * minutes + 0.015 * opened
        - 0.03 * days_since + 0.5 * newsletter + 0.2 * np.log1p(employees)
    )  # fmt: skip
    y = rng.random(n) < 1 / (1 + np.exp(-logit))
    never = rng.random(n) < 0.12
    names = _names(shape)
    frame = pd.DataFrame(
        {
            names["source"]: source,
            names["region"]: region,
            names["visits"]: visits.astype(str),
            names["minutes"]: _decimal(minutes, shape.decimal),
            names["opened"]: _decimal(opened, shape.decimal),
            names["days"]: _days(days_since, never, shape.sentinel),
            names["newsletter"]: np.where(newsletter, "Yes", "No"),
            names["employees"]: employees.astype(int).astype(str),
            names["created"]: (
                pd.Timestamp("2025-01-01") + pd.to_timedelta(rng.integers(0, 365, n), "D")
            ).strftime("%Y-%m-%d"),
            names["notes"]: [f"call back re quote {rng.integers(10**6)}" for _ in range(n)],
            # Filled in by sales after the outcome: it leaks the label almost perfectly.
            names["status"]: np.where(
                y ^ (rng.random(n) < 0.02), "Closed - customer", "Closed - not interested"
            ),
            shape.label: np.where(y, shape.positive, shape.negative),
        }
    )
    if shape.id_column:
        frame.insert(0, shape.id_column, [f"L-{i:06d}" for i in range(1, n + 1)])
    return frame


def write_table(shape_name: str, folder: Path, n: int = 2000, seed: int = 0) -> Path:
    """Write the shape's file into ``folder`` and return its path."""
    shape = SHAPES[shape_name]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{shape_name}.csv"
    lead_table(shape, n, seed).to_csv(
        path, sep=shape.delimiter, index=False, encoding=shape.encoding
    )
    return path


def _names(shape: Shape) -> dict[str, str]:
    if shape.odd_headers:
        return {
            "source": "Lead Source (channel)", "region": "Sales Region", "visits": "Site Visits",
            "minutes": "Time on Site (min)", "opened": "Email Open Rate (%)",
            "days": "Days Since Last Visit", "newsletter": "Newsletter Opt-In?",
            "employees": "Company Size (# employees)", "created": "Created On",
            "notes": "First Call Notes", "status": "Lead Status",
        }  # fmt: skip
    return {
        "source": "source", "region": "region", "visits": "visits", "minutes": "minutes",
        "opened": "open_rate", "days": "days_since_visit", "newsletter": "newsletter",
        "employees": "employees", "created": "created", "notes": "notes", "status": "status",
    }  # fmt: skip


def _decimal(values: np.ndarray, mark: str) -> list[str]:
    return [f"{v:.1f}".replace(".", mark) for v in values]


def _days(days: np.ndarray, never: np.ndarray, sentinel: float | None) -> list[str]:
    written = np.where(never, sentinel if sentinel is not None else np.nan, days)
    return ["" if np.isnan(v) else str(int(v)) for v in written]
