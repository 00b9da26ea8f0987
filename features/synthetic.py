"""A synthetic B2B software CRM with a known answer: leads, tracked actions, stage history.

Real CRM exports cannot tell us how good a lead-scoring model *could* be, because nobody
knows the true chance that a lead converts. This generator does: every lead's chance of
reaching each lifecycle stage is written to ``truth`` before the outcome is drawn from it,
so a trained model can be compared with the best possible one (the "oracle").

The story, in the order the code follows it:

1. **Profile.** Demographics and firmographics drawn from skewed, correlated
   distributions (company size log-normal, revenue tied to size and industry, C-level
   people mostly in the executive department, free-mail more common in tiny companies).
2. **Fit and intent.** A hidden *fit* score sums the profile's effects; a hidden
   *intent* is random but partly correlated with fit. Neither is written out.
3. **Actions.** Intent sets how many actions a lead takes (Poisson, some leads almost
   silent) and their mix (high intent: pricing page, demos, trials, webinars; low intent:
   e-mail opens, page views, unsubscribes, bounces). Actions come in bursts (sessions)
   spread over ``horizon_days`` after creation.
4. **Decision.** At ``decision_at = created_at + decision_days`` the lead is qualified or
   not. The true probabilities are functions ONLY of what is observable then: the clean
   profile and the actions with ``occurred_at <= decision_at``. Intent itself never
   enters, so the oracle is exactly what an honest model could learn from the data.
5. **Outcome.** The furthest stage is drawn stage by stage from those probabilities;
   every stage above ``lead`` is reached strictly after ``decision_at``, so the stage
   history cannot leak the label into features computed as of the decision.
6. **Mess.** Only after the probabilities are fixed is the written profile made messy:
   missing values in several spellings, random case, stray spaces, aliases ("VP",
   "USA"), a few values the spec has never seen ("Agriculture"), and rep notes that leak
   the outcome on purpose (the spec marks them after-contact and never uses them).

The data describe a snapshot taken long after ``end``: outcomes are not censored, so
leads created near ``end`` have stage timestamps after it.

Everything is vectorised with numpy (no Python loop per lead or per action), and one
seed fixes every random stream, so the same config always writes byte-identical files.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal, cast

import numpy as np
import pandas as pd

from features.spec import LIFECYCLE_STAGES

_DAY = 86_400
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

LEAD_COLUMNS: tuple[str, ...] = (
    "lead_id",
    "created_at",
    "first_name",
    "email",
    "seniority",
    "department",
    "industry",
    "company_size",
    "annual_revenue",
    "country",
    "acquisition_source",
    "business_email",
    "owner_notes",
)
ACTION_COLUMNS: tuple[str, ...] = ("lead_id", "action_type", "occurred_at")
HISTORY_COLUMNS: tuple[str, ...] = ("lead_id", "stage", "reached_at")
TRUTH_COLUMNS: tuple[str, ...] = (
    "lead_id",
    "decision_at",
    "p_mql",
    "p_sql",
    "p_opportunity",
    "p_customer",
)
FILE_NAMES: dict[str, str] = {
    "leads": "leads.csv",
    "actions": "actions.csv",
    "history": "stage_history.csv",
    "truth": "truth.csv",
}

#: Action types in the order of the sample spec; the generator's type codes index this.
ACTION_TYPES: tuple[str, ...] = (
    "page_view",
    "pricing_page",
    "email_open",
    "email_click",
    "form_submit",
    "content_download",
    "webinar",
    "demo_request",
    "trial_signup",
    "unsubscribe",
    "email_bounce",
)
_T = {name: code for code, name in enumerate(ACTION_TYPES)}

#: Share of each action type for a lead of average intent (intent 0).
_TYPE_SHARE = np.array([0.37, 0.035, 0.27, 0.08, 0.03, 0.06, 0.012, 0.004, 0.004, 0.012, 0.01])
#: How one standard deviation of intent moves each type's log-odds: buyers look at prices
#: and ask for demos, the uninterested open (or bounce, or unsubscribe from) e-mails.
_TYPE_INTENT = np.array([0.0, 0.7, -0.15, 0.25, 0.35, 0.2, 0.55, 0.95, 0.85, -0.9, -0.5])
#: Extra log-odds of a bounce for free-mail addresses, which are more often typos or burners.
_FREEMAIL_BOUNCE = 1.0

#: Strings a CRM export uses for "no value"; all are missing tokens of the spec.
MISSING_TOKENS: tuple[str, ...] = ("", "N/A", "Select", "null")
_MISSING_WEIGHTS = np.array([0.55, 0.2, 0.15, 0.1])

#: Per-column multiplier of ``SampleConfig.missing_rate``; forms get some fields skipped
#: more than others (revenue is often unknown, country is usually inferred from the IP).
_MISSING_SHARE: dict[str, float] = {
    "seniority": 1.2,
    "department": 1.0,
    "industry": 0.8,
    "company_size": 1.4,
    "annual_revenue": 1.6,
    "country": 0.6,
    "acquisition_source": 1.0,
    "business_email": 0.6,
}


@dataclass(frozen=True)
class _Level:
    """One value of a categorical column: how common it is, how it moves fit, how it is spelt.

    ``spellings`` are the non-canonical forms a CRM shows for it (aliases of the spec, a
    display label); out-of-spec values are levels here too, so the hidden fit can treat
    them as the genuine business facts they are even though the spec has never seen them.
    """

    value: str
    weight: float
    fit: float
    spellings: tuple[str, ...] = ()


@dataclass(frozen=True)
class _Column:
    name: str
    levels: tuple[_Level, ...]

    @property
    def values(self) -> tuple[str, ...]:
        return tuple(lvl.value for lvl in self.levels)

    @property
    def probabilities(self) -> np.ndarray:
        w = np.array([lvl.weight for lvl in self.levels])
        return w / w.sum()

    @property
    def fit(self) -> np.ndarray:
        return np.array([lvl.fit for lvl in self.levels])

    def code(self, value: str) -> int:
        return self.values.index(value)


def _col(
    name: str, *levels: tuple[str, float, float] | tuple[str, float, float, tuple[str, ...]]
) -> _Column:
    return _Column(name, tuple(_Level(*lvl) for lvl in levels))


_SENIORITY = _col(
    "seniority",
    ("intern", 0.05, -1.2, ("Intern",)),
    ("individual_contributor", 0.36, -0.4, ("IC", "Staff", "Individual Contributor")),
    ("manager", 0.27, 0.1, ("Manager",)),
    ("director", 0.15, 0.5, ("Director", "Head")),
    ("vp", 0.09, 0.7, ("VP", "Vice-President", "Vice President")),
    ("c_level", 0.08, 0.6, ("CEO", "CTO", "CFO", "Owner", "C-Level")),
    ("student", 0.003, -1.5, ("Student",)),
)
_DEPARTMENT = _col(
    "department",
    ("engineering", 0.22, 0.2, ("Engineering",)),
    ("it", 0.14, 0.35, ("IT",)),
    ("marketing", 0.18, 0.1, ("Marketing",)),
    ("sales", 0.14, 0.0, ("Sales",)),
    ("operations", 0.10, 0.05, ("Operations",)),
    ("finance", 0.07, 0.1, ("Finance",)),
    ("hr", 0.05, -0.4, ("HR",)),
    ("executive", 0.04, 0.4, ("Executive",)),
    ("other", 0.06, -0.4, ("Other",)),
    ("legal", 0.004, -0.3, ("Legal",)),
)
_INDUSTRY = _col(
    "industry",
    ("software", 0.24, 0.5, ("Software",)),
    ("financial_services", 0.12, 0.4, ("Financial Services", "Financial-Services")),
    ("healthcare", 0.10, 0.1, ("Healthcare",)),
    ("manufacturing", 0.10, 0.0, ("Manufacturing",)),
    ("retail", 0.10, -0.2, ("Retail",)),
    ("education", 0.08, -0.5, ("Education",)),
    ("government", 0.05, -0.4, ("Government",)),
    ("media", 0.07, -0.1, ("Media",)),
    ("logistics", 0.06, 0.0, ("Logistics",)),
    ("consulting", 0.08, 0.15, ("Consulting",)),
    ("agriculture", 0.004, -0.3, ("Agriculture",)),
    ("energy", 0.003, 0.1, ("Energy",)),
)
_COUNTRY = _col(
    "country",
    ("us", 0.42, 0.15, ("US", "USA", "United States")),
    ("gb", 0.10, 0.1, ("UK", "United Kingdom", "GB")),
    ("de", 0.08, 0.1, ("Germany", "DE")),
    ("fr", 0.05, 0.0, ("France", "FR")),
    ("in", 0.09, -0.3, ("India", "IN")),
    ("br", 0.05, -0.2, ("Brazil", "BR")),
    ("ca", 0.05, 0.1, ("Canada", "CA")),
    ("au", 0.04, 0.05, ("Australia", "AU")),
    ("nl", 0.03, 0.1, ("Netherlands", "NL")),
    ("es", 0.03, -0.1, ("Spain", "ES")),
    ("other", 0.06, -0.2, ("Other",)),
    ("japan", 0.003, 0.0, ("Japan",)),
    ("mexico", 0.003, -0.2, ("Mexico",)),
)
_SOURCE = _col(
    "acquisition_source",
    ("organic_search", 0.28, 0.0, ("Organic Search", "Organic-Search")),
    ("paid_search", 0.18, -0.15, ("Paid Search", "Paid-Search")),
    ("social", 0.12, -0.35, ("Social",)),
    ("referral", 0.07, 0.8, ("Referral",)),
    ("partner", 0.06, 0.6, ("Partner",)),
    ("event", 0.07, 0.45, ("Event",)),
    ("outbound", 0.12, -0.25, ("Outbound",)),
    ("direct", 0.10, 0.15, ("Direct",)),
    ("podcast", 0.003, 0.0, ("Podcast",)),
)
_BUSINESS_EMAIL = _col(
    "business_email",
    ("yes", 1.0, 0.6, ("Yes", "YES", "true", "1")),
    ("no", 1.0, 0.0, ("No", "NO", "false", "0")),
)
_SHIFTABLE = (_SENIORITY, _DEPARTMENT, _INDUSTRY, _COUNTRY, _SOURCE)
_SENIOR = np.isin(np.array(_SENIORITY.values), ["director", "vp", "c_level"])

#: Log-median employees by industry offset, and log-median revenue per employee (USD).
_SIZE_LOG_MEDIAN = np.log(60.0)
_SIZE_LOG_SIGMA = 1.9
_INDUSTRY_SIZE_SHIFT = np.array([0.2, 0.6, 0.4, 0.5, 0.2, 0.6, 1.0, 0.0, 0.3, -0.3, -0.2, 0.7])
_INDUSTRY_REV_PER_EMPLOYEE = np.array(
    [220e3, 350e3, 150e3, 250e3, 180e3, 80e3, 100e3, 160e3, 200e3, 170e3, 120e3, 400e3]
)
_MAX_SIZE = 500_000

#: The raw fit is centred and scaled with these constants (measured once on a large
#: sample) so intent's correlation with fit does not depend on the sample drawn.
_FIT_CENTER = 0.73
_FIT_SCALE = 0.84
_INTENT_FIT_CORR = 0.45
_INTENT_COUNT_SLOPE = 0.9
_DORMANT_SHARE = 0.12
_DORMANT_FACTOR = 0.06

#: Intercepts of the stage models, tuned on 200,000 leads at the default config for about
#: 25% MQL, 8% SQL, 3.5% opportunity and 1.25% customer.
_B_MQL = -2.52
_B_SQL = -2.6
_B_OPP = -1.67
_B_CUST = -1.77


def _words(text: str) -> np.ndarray:
    """A word list as an object array, so it can be indexed by random codes."""
    return np.array(text.split(), dtype=object)


_FIRST_NAMES = _words(
    "James Mary Robert Patricia John Jennifer Michael Linda David Elizabeth William Barbara "
    "Richard Susan Joseph Jessica Thomas Sarah Charles Karen Daniel Lisa Matthew Nancy "
    "Anthony Betty Mark Sandra Priya Rahul Ananya Arjun Wei Mei Hiroshi Yuki Lukas Anna "
    "Felix Laura Pierre Camille Lucas Julia Mateo Sofia Olivia Liam Emma Noah Ava Ethan "
    "Chloe Jack Grace Oliver Mia Leon Hannah Diego Lucia Ahmed Fatima Kwame Amara"
)
_FIRST_LOWER = np.array([s.lower() for s in _FIRST_NAMES], dtype=object)
_FIRST_INITIAL = np.array([s[0].lower() for s in _FIRST_NAMES], dtype=object)
_TWO_DIGITS = np.array([f"{i:02d}" for i in range(100)], dtype=object)
_LAST_NAMES = _words(
    "smith johnson williams brown jones garcia miller davis rodriguez martinez hernandez "
    "lopez wilson anderson thomas taylor moore jackson martin lee thompson white harris "
    "clark lewis walker hall allen young king wright scott green baker adams nelson hill "
    "patel sharma kumar singh chen wang li zhang tanaka suzuki muller schmidt schneider "
    "fischer dubois bernard silva santos oliveira devries jansen okafor mensah"
)
_FREE_DOMAINS = _words("gmail.com yahoo.com outlook.com")
_DOMAIN_HEADS = _words(
    "acme nova blue tera quant brisk lumen vertex orbit pixel cedar summit north bright "
    "atlas delta apex zen core iron silver river peak coral echo prime vivid solid"
)
_DOMAIN_TAILS = _words(
    "soft labs works data ly corp systems group health bank logic cloud tech hq io net "
    "partners digital analytics global"
)
#: Company-domain suffix, indexed by _COUNTRY code (the last two are out-of-spec countries).
_COUNTRY_TLD = _words(".com .co.uk .de .fr .in .com.br .ca .com.au .nl .es .com .co.jp .com.mx")
_NOTES: dict[int, tuple[str, ...]] = {
    2: ("called, interested", "spoke on the phone, wants a demo", "qualified, budget tbc"),
    3: ("demo done, proposal sent", "called, interested; pricing discussed"),
    4: ("closed won", "signed, onboarding booked"),
}
_NOTES_SHARE = 0.9


@dataclass(frozen=True)
class Shift:
    """A change of the world, for testing monitoring: the generator still knows the truth.

    ``weights`` replaces the relative weight of levels of a profile column (``{"seniority":
    {"director": 0.4}}``; a level the spec does not know, such as ``acquisition_source``
    ``podcast``, is a new acquisition source); ``conversion`` multiplies a stage's
    conditional probability (``{"sql": 0.5}``: half as many MQLs become SQLs).
    """

    weights: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    conversion: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        columns = {c.name: c for c in _SHIFTABLE}
        for name, levels in self.weights.items():
            if name not in columns:
                raise ValueError(f"shift: unknown column {name!r} (one of {sorted(columns)})")
            unknown = set(levels) - set(columns[name].values)
            if unknown:
                raise ValueError(f"shift: {name} has no level {sorted(unknown)}")
            if any(w < 0 for w in levels.values()):
                raise ValueError("shift: weights cannot be negative")
        stages = LIFECYCLE_STAGES[1:]
        for stage, factor in self.conversion.items():
            if stage not in stages or not 0 <= factor:
                raise ValueError(f"shift: conversion needs a stage of {stages} and a factor >= 0")

    def column(self, column: _Column) -> _Column:
        """``column`` with this shift's level weights."""
        new = self.weights.get(column.name)
        if not new:
            return column
        levels = tuple(
            _Level(lvl.value, new.get(lvl.value, lvl.weight), lvl.fit, lvl.spellings)
            for lvl in column.levels
        )
        return _Column(column.name, levels)

    def conditional(self, p: np.ndarray) -> np.ndarray:
        """Conditional stage probabilities (n, 4) with the conversion factors applied."""
        out = p.copy()
        for stage, factor in self.conversion.items():
            j = LIFECYCLE_STAGES.index(stage) - 1
            out[:, j] = np.clip(out[:, j] * factor, 0.0, 1.0)
        return out


@dataclass(frozen=True)
class SampleConfig:
    """Every knob of the generator; the defaults make the bundled sample data set.

    The stage intercepts are tuned for the default ``mean_actions`` and ``decision_days``;
    other values still work but move the funnel rates (more actions, more MQLs).
    """

    n_leads: int = 20_000
    seed: int = 7
    start: datetime = datetime(2025, 1, 1, tzinfo=UTC)
    end: datetime = datetime(2026, 7, 1, tzinfo=UTC)
    decision_days: int = 30
    mean_actions: float = 20.0
    horizon_days: int = 120
    missing_rate: float = 0.05
    messy_rate: float = 0.2
    shift: Shift | None = None

    def __post_init__(self) -> None:
        if self.n_leads < 1:
            raise ValueError("n_leads must be at least 1")
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise ValueError("start and end must be timezone-aware (UTC)")
        if not self.start < self.end:
            raise ValueError("start must be before end")
        if not 0 < self.decision_days < self.horizon_days:
            raise ValueError("decision_days must be positive and below horizon_days")
        if self.mean_actions <= 0:
            raise ValueError("mean_actions must be positive")
        # The most-skipped column is blanked at 1.6 x missing_rate; keep that below half.
        if not 0 <= self.missing_rate <= 0.3:
            raise ValueError(f"missing_rate must be in [0, 0.3], got {self.missing_rate}")
        if not 0 <= self.messy_rate <= 1:
            raise ValueError(f"messy_rate must be in [0, 1], got {self.messy_rate}")


@dataclass
class SampleData:
    """The four tables, as they are written (messy profile, clean timestamps).

    Timestamps are tz-aware UTC at second precision. ``actions`` stores ``lead_id`` and
    ``action_type`` as categoricals because it has millions of rows.
    """

    leads: pd.DataFrame
    actions: pd.DataFrame
    history: pd.DataFrame
    truth: pd.DataFrame


@dataclass(frozen=True)
class _Profile:
    """The clean profile: category codes into the column tables, numbers without gaps."""

    created: np.ndarray  # int64 epoch seconds, sorted
    seniority: np.ndarray
    department: np.ndarray
    industry: np.ndarray
    country: np.ndarray
    source: np.ndarray
    business: np.ndarray  # bool
    size: np.ndarray  # int64 employees
    revenue: np.ndarray  # int64 USD


@dataclass(frozen=True)
class _Actions:
    """Actions sorted by lead then time: lead index, epoch seconds, type code."""

    lead: np.ndarray
    at: np.ndarray
    kind: np.ndarray


@dataclass(frozen=True)
class _Observables:
    """What anyone can know about each lead at its decision time; the oracle's only input.

    ``decayed`` and ``counts`` are (n_leads, n_types) over actions with occurred_at <=
    decision_at; decayed counts weigh an action by 0.5 ** (age / 14 days).
    """

    decayed: np.ndarray
    counts: np.ndarray
    last_7d: np.ndarray
    days_since_pricing: np.ndarray


@dataclass(frozen=True)
class _Streams:
    """Independent random streams, so adding draws to one step leaves the others intact."""

    profile: np.random.Generator
    actions: np.random.Generator
    outcome: np.random.Generator
    mess: np.random.Generator
    names: np.random.Generator

    @classmethod
    def from_seed(cls, seed: int) -> _Streams:
        seqs = np.random.SeedSequence(seed).spawn(5)
        return cls(*(np.random.default_rng(s) for s in seqs))


def _epoch(ts: datetime) -> int:
    return int((ts - _EPOCH).total_seconds())


def _draw(rng: np.random.Generator, column: _Column, n: int) -> np.ndarray:
    return rng.choice(len(column.levels), size=n, p=column.probabilities).astype(np.int64)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _draw_profile(config: SampleConfig, rng: np.random.Generator) -> _Profile:
    """Demographics and firmographics, with the correlations a real CRM shows.

    Leads are sorted by creation time so ids grow with time, as a CRM assigns them.
    """
    n = config.n_leads
    shift = config.shift or Shift()
    created = np.sort(rng.integers(_epoch(config.start), _epoch(config.end), size=n))
    seniority = _draw(rng, shift.column(_SENIORITY), n)
    department = _draw(rng, shift.column(_DEPARTMENT), n)
    # Half of the C-level people say they are in the executive department.
    exec_override = (seniority == _SENIORITY.code("c_level")) & (rng.random(n) < 0.5)
    department[exec_override] = _DEPARTMENT.code("executive")
    industry = _draw(rng, shift.column(_INDUSTRY), n)
    country = _draw(rng, shift.column(_COUNTRY), n)
    source = _draw(rng, shift.column(_SOURCE), n)
    log_size = (
        _SIZE_LOG_MEDIAN + _INDUSTRY_SIZE_SHIFT[industry] + _SIZE_LOG_SIGMA * rng.standard_normal(n)
    )
    size = np.clip(np.rint(np.exp(log_size)), 1, _MAX_SIZE).astype(np.int64)
    per_employee = _INDUSTRY_REV_PER_EMPLOYEE[industry] * np.exp(0.6 * rng.standard_normal(n))
    revenue = (np.rint(size * per_employee / 1000.0) * 1000).astype(np.int64)
    # Tiny companies and interns use free-mail far more often.
    p_business = np.where(size < 10, 0.5, 0.8) - np.where(
        seniority == _SENIORITY.code("intern"), 0.25, 0.0
    )
    business = rng.random(n) < p_business
    return _Profile(
        created, seniority, department, industry, country, source, business, size, revenue
    )


def _size_fit(size: np.ndarray) -> np.ndarray:
    """Mid-size companies (a few hundred to a few thousand people) buy; tiny and huge rarely."""
    return 0.7 * np.exp(-(((np.log10(size) - 2.8) / 0.9) ** 2)) - 0.3


def _fit_score(p: _Profile) -> np.ndarray:
    """The hidden fit of a lead's profile: a sum of per-field effects plus a size bump."""
    return (
        _SENIORITY.fit[p.seniority]
        + _DEPARTMENT.fit[p.department]
        + _INDUSTRY.fit[p.industry]
        + _COUNTRY.fit[p.country]
        + _SOURCE.fit[p.source]
        + np.where(p.business, _BUSINESS_EMAIL.fit[0], _BUSINESS_EMAIL.fit[1])
        + _size_fit(p.size)
    )


def _draw_intent(fit: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Unit-variance intent, correlated with fit: good-fit leads tend to be in-market."""
    z = (fit - _FIT_CENTER) / _FIT_SCALE
    return _INTENT_FIT_CORR * z + np.sqrt(1 - _INTENT_FIT_CORR**2) * rng.standard_normal(fit.size)


def _action_counts(intent: np.ndarray, mean: float, rng: np.random.Generator) -> np.ndarray:
    """Poisson counts whose mean grows with intent; a dormant share takes almost no action.

    The multipliers are normalised so the population mean stays ``mean``.
    """
    n = intent.size
    dormant = rng.random(n) < _DORMANT_SHARE
    active_factor = (1 - _DORMANT_SHARE * _DORMANT_FACTOR) / (1 - _DORMANT_SHARE)
    factor = np.where(dormant, _DORMANT_FACTOR, active_factor)
    lam = mean * factor * np.exp(_INTENT_COUNT_SLOPE * intent - _INTENT_COUNT_SLOPE**2 / 2)
    return rng.poisson(lam).astype(np.int64)


def _type_cdf(intent: np.ndarray, business: np.ndarray) -> np.ndarray:
    """Per-lead cumulative distribution over action types (n_leads, n_types)."""
    logits = np.log(_TYPE_SHARE)[None, :] + _TYPE_INTENT[None, :] * intent[:, None]
    logits[:, _T["email_bounce"]] += np.where(business, 0.0, _FREEMAIL_BOUNCE)
    logits -= logits.max(axis=1, keepdims=True)
    probs = np.exp(logits)
    cdf = np.cumsum(probs, axis=1)
    return cdf / cdf[:, -1:]


def _draw_actions(
    p: _Profile, intent: np.ndarray, config: SampleConfig, rng: np.random.Generator
) -> _Actions:
    """Timestamped actions in bursts: a lead's actions fall into a few sessions.

    The first session starts at creation (the visit that created the lead); later ones
    are spread over the horizon, front-loaded as interest fades. Each action lands at a
    uniform point of its session, which lasts minutes to an hour or so.
    """
    n = p.created.size
    horizon = config.horizon_days * _DAY
    counts = _action_counts(intent, config.mean_actions, rng)
    lead = np.repeat(np.arange(n), counts)
    n_actions = lead.size
    sessions = np.minimum(counts, 1 + rng.poisson(counts / 6.0))
    first_session = np.concatenate(([0], np.cumsum(sessions)[:-1]))
    starts = horizon * rng.beta(0.7, 1.6, size=int(sessions.sum()))
    starts[first_session[sessions > 0]] = 0.0
    lengths = rng.exponential(25 * 60, size=starts.size)
    session = first_session[lead] + (rng.random(n_actions) * sessions[lead]).astype(np.int64)
    offset = starts[session] + rng.random(n_actions) * lengths[session]
    offset = np.minimum(np.floor(offset), horizon - 1).astype(np.int64)
    at = p.created[lead] + offset
    cdf = _type_cdf(intent, p.business)
    u = rng.random(n_actions)
    kind = np.zeros(n_actions, dtype=np.int8)
    for t in range(len(ACTION_TYPES) - 1):
        kind += u >= cdf[lead, t]
    order = np.lexsort((kind, at, lead))
    return _Actions(lead[order], at[order], kind[order])


def _observe(actions: _Actions, decision: np.ndarray) -> _Observables:
    """Summarise, per lead, the actions known at its decision time.

    This is the only door from the action stream to the outcome: anything after
    ``decision`` is dropped here, which is what makes the oracle honest.
    """
    n, n_types = decision.size, len(ACTION_TYPES)
    known = actions.at <= decision[actions.lead]
    lead, kind = actions.lead[known], actions.kind[known].astype(np.int64)
    age_days = (decision[lead] - actions.at[known]) / _DAY
    cell = lead * n_types + kind
    decayed = np.bincount(cell, weights=0.5 ** (age_days / 14.0), minlength=n * n_types)
    counts = np.bincount(cell, minlength=n * n_types)
    last_7d = np.bincount(lead[age_days <= 7.0], minlength=n)
    pricing = kind == _T["pricing_page"]
    days_since_pricing = np.full(n, 365.0)
    np.minimum.at(days_since_pricing, lead[pricing], age_days[pricing])
    return _Observables(
        decayed.reshape(n, n_types),
        counts.reshape(n, n_types),
        last_7d,
        days_since_pricing,
    )


def _stage_probabilities(p: _Profile, obs: _Observables) -> np.ndarray:
    """Conditional stage probabilities (n_leads, 4): P(mql), P(sql|mql), P(opp|sql), P(cust|opp).

    Engagement enters through log1p of decayed counts (diminishing returns), a recency
    bump for a pricing-page visit in the last days, a seniority x demo interaction and a
    tanh saturation (no amount of page views makes a bad fit certain). Later stages lean
    more on fit and on the strongest buying signals (demos, trials), as sales does.
    """
    d = {name: np.log1p(obs.decayed[:, code]) for name, code in _T.items()}
    c = obs.counts
    fit = _fit_score(p)
    senior = _SENIOR[p.seniority].astype(float)
    engagement = (
        0.9 * d["pricing_page"]
        + 1.3 * d["demo_request"]
        + 1.1 * d["trial_signup"]
        + 0.6 * d["webinar"]
        + 0.45 * d["form_submit"]
        + 0.35 * d["email_click"]
        + 0.25 * d["content_download"]
        + 0.2 * d["page_view"]
        + 0.05 * d["email_open"]
        + 0.25 * np.log1p(obs.last_7d)
        + 0.7 * np.exp(-obs.days_since_pricing / 5.0)
        + 0.5 * senior * np.log1p(c[:, _T["demo_request"]])
        - 1.5 * (c[:, _T["unsubscribe"]] > 0)
        - 0.6 * (c[:, _T["email_bounce"]] > 0)
    )
    mql = _B_MQL + 0.8 * fit + 4.0 * np.tanh(engagement / 4.0)
    demo = np.log1p(c[:, _T["demo_request"]])
    trial = np.log1p(c[:, _T["trial_signup"]])
    sql = _B_SQL + 0.9 * fit + 0.8 * demo + 0.6 * trial + 0.4 * senior + 0.3 * d["pricing_page"]
    opp = _B_OPP + 0.7 * fit + 0.5 * np.log1p(c[:, _T["demo_request"]] + c[:, _T["trial_signup"]])
    big_budget = np.clip(np.log10(np.maximum(p.revenue, 1)) - 7.0, -2.0, 2.0)
    cust = _B_CUST + 0.5 * fit + 0.3 * big_budget + 0.3 * trial
    return _sigmoid(np.stack([mql, sql, opp, cust], axis=1))


def _draw_outcome(conditional: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Furthest stage index per lead (0 = lead ... 4 = customer), drawn stage by stage."""
    passed = rng.random(conditional.shape) < conditional
    return np.cumprod(passed, axis=1).sum(axis=1)


def _stage_times(
    decision: np.ndarray, furthest: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Epoch seconds each stage above 'lead' is reached (n_leads, 4); only <= furthest used.

    MQL comes 1-20 days after the decision, each later stage 3-40 days after the previous.
    """
    n = decision.size
    gaps = np.empty((n, 4), dtype=np.int64)
    gaps[:, 0] = rng.integers(_DAY, 20 * _DAY + 1, size=n)
    gaps[:, 1:] = rng.integers(3 * _DAY, 40 * _DAY + 1, size=(n, 3))
    return decision[:, None] + np.cumsum(gaps, axis=1)


def _recase(values: np.ndarray, mask: np.ndarray, how: Literal["upper", "lower", "title"]) -> None:
    """Change the case of the masked values in place, as hand-typed CRM entries do."""
    idx = np.flatnonzero(mask)
    if how == "upper":
        values[idx] = [v.upper() for v in values[idx]]
    elif how == "lower":
        values[idx] = [v.lower() for v in values[idx]]
    else:
        values[idx] = [v.title() for v in values[idx]]


def _spell(
    codes: np.ndarray,
    column: _Column,
    missing_rate: float,
    messy_rate: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """Write clean category codes the way a CRM export shows them.

    About ``messy_rate`` of values get an alternative spelling (alias or display label),
    some get random case or stray spaces, and ``missing_rate`` become a missing token.
    """
    n = codes.size
    out = np.array(column.values, dtype=object)[codes]
    alt = rng.random(n) < messy_rate
    for k, level in enumerate(column.levels):
        rows = np.flatnonzero(alt & (codes == k))
        if level.spellings and rows.size:
            choice = rng.integers(len(level.spellings), size=rows.size)
            out[rows] = np.array(level.spellings, dtype=object)[choice]
    case = rng.random(n)
    _recase(out, case < 0.15 * messy_rate, "upper")
    _recase(out, (case >= 0.15 * messy_rate) & (case < 0.3 * messy_rate), "title")
    _recase(out, (case >= 0.3 * messy_rate) & (case < 0.4 * messy_rate), "lower")
    space = rng.random(n)
    pad = np.flatnonzero(space < 0.1 * messy_rate)
    out[pad] = [f" {v}" if i % 2 else f"{v}  " for i, v in enumerate(out[pad])]
    _blank(out, missing_rate, rng)
    return out


def _blank(values: np.ndarray, rate: float, rng: np.random.Generator) -> None:
    """Replace a ``rate`` share of values with one of the CRM's missing-value spellings."""
    rows = np.flatnonzero(rng.random(values.size) < rate)
    tokens = np.array(MISSING_TOKENS, dtype=object)
    values[rows] = tokens[rng.choice(len(MISSING_TOKENS), size=rows.size, p=_MISSING_WEIGHTS)]


def _names_and_emails(p: _Profile, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """First names and e-mail addresses whose domain agrees with ``business_email``."""
    n = p.created.size
    name = rng.integers(_FIRST_NAMES.size, size=n)
    first = _FIRST_NAMES[name]
    f, initial = _FIRST_LOWER[name], _FIRST_INITIAL[name]
    last = _LAST_NAMES[rng.integers(_LAST_NAMES.size, size=n)]
    digits = _TWO_DIGITS[rng.integers(100, size=n)]
    pattern = rng.integers(4, size=n)
    local = np.select(
        [pattern == 0, pattern == 1, pattern == 2],
        [f + "." + last, initial + last, f + "_" + last + digits],
        default=f,
    )
    company = (
        _DOMAIN_HEADS[rng.integers(_DOMAIN_HEADS.size, size=n)]
        + _DOMAIN_TAILS[rng.integers(_DOMAIN_TAILS.size, size=n)]
        + _COUNTRY_TLD[p.country]
    )
    free = _FREE_DOMAINS[rng.integers(_FREE_DOMAINS.size, size=n)]
    # A free-mail address needs to be unique-looking; digits make it so.
    local = np.where(p.business, local, np.where(pattern == 3, f + last + digits, local))
    email = local + "@" + np.where(p.business, company, free)
    return first, email


def _owner_notes(furthest: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Rep notes: written only after a sales call, so only for leads that reached SQL."""
    n = furthest.size
    notes = np.full(n, "", dtype=object)
    written = rng.random(n) < _NOTES_SHARE
    pick = rng.random(n)
    for stage, options in _NOTES.items():
        rows = (furthest == stage) & written
        notes[rows] = np.array(options, dtype=object)[(pick[rows] * len(options)).astype(int)]
    return notes


def _utc(seconds: np.ndarray) -> pd.DatetimeIndex:
    return pd.to_datetime(seconds, unit="s", utc=True)


def _with_gaps(values: np.ndarray, rate: float, rng: np.random.Generator) -> pd.Series:
    """A nullable integer column with a ``rate`` share blanked: written as empty CSV fields."""
    out = pd.Series(values, dtype="Int64")
    out[rng.random(values.size) < rate] = pd.NA
    return out


def _categorical(codes: np.ndarray, categories: Sequence[str] | np.ndarray) -> pd.Categorical:
    """A categorical straight from integer codes: no hashing of millions of strings.

    pandas accepts any integer array here; its stubs only name ``Sequence[int]``.
    """
    return pd.Categorical.from_codes(
        cast("Sequence[int]", codes), dtype=pd.CategoricalDtype(list(categories))
    )


def _leads_frame(
    ids: np.ndarray,
    p: _Profile,
    furthest: np.ndarray,
    config: SampleConfig,
    streams: _Streams,
) -> pd.DataFrame:
    """The written leads table: clean profile made messy, plus names, e-mails and notes."""
    rng = streams.mess
    miss, messy = config.missing_rate, config.messy_rate

    def rate(col: str) -> float:
        return miss * _MISSING_SHARE[col]

    first, email = _names_and_emails(p, streams.names)
    size = _with_gaps(p.size, rate("company_size"), rng)
    revenue = _with_gaps(p.revenue, rate("annual_revenue"), rng)
    business = np.where(p.business, 0, 1)
    return pd.DataFrame(
        {
            "lead_id": ids,
            "created_at": _utc(p.created),
            "first_name": first,
            "email": email,
            "seniority": _spell(p.seniority, _SENIORITY, rate("seniority"), messy, rng),
            "department": _spell(p.department, _DEPARTMENT, rate("department"), messy, rng),
            "industry": _spell(p.industry, _INDUSTRY, rate("industry"), messy, rng),
            "company_size": size,
            "annual_revenue": revenue,
            "country": _spell(p.country, _COUNTRY, rate("country"), messy, rng),
            "acquisition_source": _spell(p.source, _SOURCE, rate("acquisition_source"), messy, rng),
            "business_email": _spell(
                business, _BUSINESS_EMAIL, rate("business_email"), messy / 4, rng
            ),
            "owner_notes": _owner_notes(furthest, rng),
        },
        columns=list(LEAD_COLUMNS),
    )


def _history_frame(
    ids: np.ndarray, created: np.ndarray, furthest: np.ndarray, reached: np.ndarray
) -> pd.DataFrame:
    """One row per stage reached, in lifecycle order per lead ('lead' at creation)."""
    n = created.size
    all_times = np.concatenate([created[:, None], reached], axis=1)
    stage_idx = np.tile(np.arange(len(LIFECYCLE_STAGES)), n)
    lead_idx = np.repeat(np.arange(n), len(LIFECYCLE_STAGES))
    keep = stage_idx <= furthest[lead_idx]
    return pd.DataFrame(
        {
            "lead_id": ids[lead_idx[keep]],
            "stage": np.array(LIFECYCLE_STAGES, dtype=object)[stage_idx[keep]],
            "reached_at": _utc(all_times.ravel()[keep]),
        }
    )


def generate(config: SampleConfig) -> SampleData:
    """Draw a whole CRM: profile, actions, the oracle's probabilities, outcome, mess."""
    streams = _Streams.from_seed(config.seed)
    profile = _draw_profile(config, streams.profile)
    intent = _draw_intent(_fit_score(profile), streams.profile)
    acts = _draw_actions(profile, intent, config, streams.actions)
    decision = profile.created + config.decision_days * _DAY
    conditional = _stage_probabilities(profile, _observe(acts, decision))
    if config.shift is not None:
        conditional = config.shift.conditional(conditional)
    furthest = _draw_outcome(conditional, streams.outcome)
    reached = _stage_times(decision, furthest, streams.outcome)
    marginal = np.cumprod(conditional, axis=1)

    ids = np.array([f"L{i:07d}" for i in range(1, config.n_leads + 1)], dtype=object)
    actions = pd.DataFrame(
        {
            "lead_id": _categorical(acts.lead, ids),
            "action_type": _categorical(acts.kind, ACTION_TYPES),
            "occurred_at": _utc(acts.at),
        }
    )
    truth = pd.DataFrame(
        {
            "lead_id": ids,
            "decision_at": _utc(decision),
            "p_mql": marginal[:, 0],
            "p_sql": marginal[:, 1],
            "p_opportunity": marginal[:, 2],
            "p_customer": marginal[:, 3],
        }
    )
    return SampleData(
        leads=_leads_frame(ids, profile, furthest, config, streams),
        actions=actions,
        history=_history_frame(ids, profile.created, furthest, reached),
        truth=truth,
    )


class _Iso:
    """Fast ISO-8601 UTC formatting: a date lookup per day plus a time-of-day lookup.

    ``strftime`` per value costs seconds on millions of actions; two table lookups and
    one string concatenation cost a fraction of that and give identical text.
    """

    _tod = np.array(
        [f"T{s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}Z" for s in range(_DAY)], dtype=object
    )

    @classmethod
    def format(cls, stamps: pd.Series | pd.DatetimeIndex) -> np.ndarray:
        index = pd.DatetimeIndex(stamps)
        if index.tz is not None:
            index = index.tz_convert(None)
        seconds = index.as_unit("s").to_numpy().view(np.int64)
        day, tod = np.divmod(seconds, _DAY)
        if day.size == 0:
            return np.array([], dtype=object)
        first = int(day.min())
        dates = np.datetime_as_string(
            np.arange(first, int(day.max()) + 1).astype("datetime64[D]")
        ).astype(object)
        return dates[day - first] + cls._tod[tod]


def _with_iso(frame: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    out = frame.copy()
    for col in columns:
        out[col] = _Iso.format(frame[col])
    return out


def _write_plain(frame: pd.DataFrame, path: Path, time_column: str) -> None:
    """Write a table of quote-free strings by joining lines directly (fast for millions).

    Only used for actions and history, whose ids, types and stages never need CSV quoting.
    """
    chunk = 250_000
    with path.open("w", encoding="utf-8", newline="\n") as fh:
        fh.write(",".join(frame.columns) + "\n")
        for lo in range(0, len(frame), chunk):
            part = frame.iloc[lo : lo + chunk]
            cols = [
                _Iso.format(part[c]) if c == time_column else part[c].astype(str).to_numpy(object)
                for c in frame.columns
            ]
            line = cols[0]
            for col in cols[1:]:
                line = line + "," + col
            fh.write("".join(line + "\n"))


def _atomic(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp")


def write(data: SampleData, out_dir: Path) -> dict[str, Path]:
    """Write the four tables as CSV (ISO-8601 UTC, second precision) and return their paths.

    Each file is written beside its final name and renamed into place, so a crash never
    leaves a half-written file that looks complete.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {key: out_dir / name for key, name in FILE_NAMES.items()}
    tmp = {key: _atomic(path) for key, path in paths.items()}
    leads = _with_iso(data.leads, ["created_at"])
    leads.to_csv(tmp["leads"], index=False, lineterminator="\n", encoding="utf-8")
    _write_plain(data.actions, tmp["actions"], "occurred_at")
    _write_plain(data.history, tmp["history"], "reached_at")
    truth = _with_iso(data.truth, ["decision_at"])
    truth.to_csv(
        tmp["truth"], index=False, lineterminator="\n", encoding="utf-8", float_format="%.6g"
    )
    for key, path in paths.items():
        os.replace(tmp[key], path)
    return paths


def funnel_rates(history: pd.DataFrame, n_leads: int) -> dict[str, float]:
    """Share of leads whose furthest stage is at least each stage."""
    counts = history["stage"].value_counts()
    return {s: float(counts.get(s, 0)) / n_leads for s in LIFECYCLE_STAGES}
