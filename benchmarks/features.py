"""Feature building and sample generation: the figures issue #2 asks for.

    python -m benchmarks.features [--leads 100000]

* one lead's vector from a dict with 20 actions (median of many runs; aim < 50 µs);
* batch throughput for N leads with 20 actions each (aim > 100,000 leads/s);
* generator time for N leads (aim < 60 s);
and the peak memory of each, each case in its own process.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchmarks.common import isolated, median_seconds

AS_OF = pd.Timestamp("2026-03-01T00:00:00Z")


def synthetic_tables(n: int, per_lead: int, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """N leads with exactly ``per_lead`` actions each over the 120 days before AS_OF."""
    from features.spec import load_spec

    spec = load_spec("sample_crm")
    rng = np.random.default_rng(seed)
    ids = np.array([f"L{i:07d}" for i in range(n)], dtype=object)
    levels = {f.name: f.levels for f in spec.feature_fields if getattr(f, "levels", None)}
    leads = pd.DataFrame(
        {
            "lead_id": ids,
            "created_at": AS_OF - pd.to_timedelta(rng.integers(30, 400, n), unit="D"),
            **{name: rng.choice(lv, n).astype(object) for name, lv in levels.items()},
            "company_size": rng.integers(1, 5000, n).astype(float),
            "annual_revenue": rng.lognormal(15, 2, n),
            "business_email": rng.integers(0, 2, n).astype(float),
        }
    )
    assert spec.actions is not None
    types = np.array([t.name for t in spec.actions.types], dtype=object)
    m = n * per_lead
    seconds = rng.integers(0, 120 * 86_400, m)
    actions = pd.DataFrame(
        {
            "lead_id": np.repeat(ids, per_lead),
            "action_type": types[rng.integers(0, len(types), m)],
            "occurred_at": AS_OF - pd.to_timedelta(seconds, unit="s"),
        }
    )
    return leads, actions


def _fitted_builder(leads: pd.DataFrame, actions: pd.DataFrame) -> Any:
    from features.builder import LeadFeatureBuilder
    from features.spec import load_spec

    return LeadFeatureBuilder(load_spec("sample_crm")).fit(leads, actions=actions, as_of=AS_OF)


def bench_single(repeat: int) -> dict[str, Any]:
    from features.batch import frames_to_records

    leads, actions = synthetic_tables(2000, 20)
    builder = _fitted_builder(leads, actions)
    records = frames_to_records(builder.spec, leads.head(200), actions, AS_OF)
    i = 0

    def one() -> None:
        nonlocal i
        builder.build_one(records[i % len(records)])
        i += 1

    seconds = median_seconds(one, repeat=repeat)
    return {"case": "one lead from a dict, 20 actions", "median_us": round(seconds * 1e6, 1)}


def bench_batch(n: int) -> dict[str, Any]:
    leads, actions = synthetic_tables(n, 20)
    builder = _fitted_builder(leads.head(5000), actions.head(5000 * 20))
    start = time.perf_counter()
    values = builder.transform(leads, actions=actions, as_of=AS_OF)
    seconds = time.perf_counter() - start
    return {
        "case": f"batch of {n:,} leads, {len(actions):,} actions",
        "seconds": round(seconds, 3),
        "leads_per_s": round(n / seconds),
        "shape": list(values.shape),
    }


def bench_generator(n: int) -> dict[str, Any]:
    from features import synthetic

    start = time.perf_counter()
    data = synthetic.generate(synthetic.SampleConfig(n_leads=n))
    generated = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as tmp:
        synthetic.write(data, Path(tmp))
    total = time.perf_counter() - start
    return {
        "case": f"generate + write {n:,} leads ({len(data.actions):,} actions)",
        "generate_s": round(generated, 2),
        "total_s": round(total, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--leads", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3000)
    args = parser.parse_args()
    print("features: (each case in a fresh process; peak RSS includes the interpreter)")
    for result in (
        isolated(bench_single, args.repeat),
        isolated(bench_batch, args.leads),
        isolated(bench_generator, args.leads),
    ):
        case = result.pop("case")
        print(f"  {case:<52} " + "  ".join(f"{k}={v}" for k, v in result.items()))


if __name__ == "__main__":
    main()
