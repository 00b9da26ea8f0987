"""Before and after a change: two checkouts of leadscore served alternately under one load.

    git archive main | tar -x -C /tmp/before        # the baseline, e.g. main
    python -m benchmarks.serving_ab --before /tmp/before [--after .] [--rounds 3]

A machine shared with other work is noisy: a figure measured an hour ago is no baseline.
This trains one model on generated leads, saves it to a folder, and then serves it from
each checkout in turn (``python -m serving`` from that folder, one worker per core, the
durable SQLite scoring log), A, B, A, B, ..., each round driving single-lead requests
(20 actions) with ``wrk`` at 1 and 8 connections. The medians and the after/before ratio
are printed; both checkouts run in this virtualenv, so only the code differs.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd

from benchmarks.serving import AS_OF, KEY, _clean, _free_port, process, wrk

CONNECTIONS = (1, 8)


def prepare(home: Path, n_leads: int) -> tuple[Path, list[dict[str, Any]]]:
    """A saved model folder and API-shaped leads with exactly 20 actions."""
    from features import synthetic
    from features.batch import frames_to_records
    from features.loaders import load_actions, load_leads
    from features.spec import load_spec
    from models.golden import write_golden
    from training.config import sample_config
    from training.dataset import load_training_set, split
    from training.pipeline import train

    spec = load_spec("sample_crm")
    data_dir = home / "data"
    synthetic.write(synthetic.generate(synthetic.SampleConfig(n_leads=n_leads)), data_dir)
    config = sample_config(data_dir, plots=False, baseline=False)
    data = load_training_set(spec, config)
    model = train(spec, config, data, split(data, spec, config)).model
    folder = model.save(home / "model")
    leads = load_leads(data_dir / "leads.csv", spec)
    actions = load_actions(data_dir / "actions.csv", spec, pd.Index(leads[spec.id_column]))
    records = frames_to_records(spec, leads.head(3000), actions, pd.Timestamp(AS_OF))
    write_golden(model, records[:20], folder)
    rich = [_clean(r) for r in records if len(r["actions"]) >= 20]
    for r in rich:
        r["actions"] = r["actions"][:20]
    return folder, rich


def serve_and_load(
    checkout: Path, model: Path, lead: dict[str, Any], home: Path, name: str, seconds: int
) -> dict[int, float]:
    """Requests/s at each connection count, for the service run from ``checkout``."""
    port = _free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "LEADSCORE_"))},
        "PYTHONPATH": str(checkout),
        "LEADSCORE_HOME": str(home),
        "LEADSCORE_MODEL_URI": str(model),
        "LEADSCORE_MODEL_CACHE_DIR": str(home / f"cache-{name}"),
        "LEADSCORE_API_KEYS_CRM": KEY,
        "LEADSCORE_DATABASE_URL": f"sqlite:///{home / f'{name}.db'}",
    }
    command = [sys.executable, "-m", "serving", "--port", str(port),
               "--workers", str(os.cpu_count() or 1)]  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    # `python -m` puts the working directory first on sys.path: the checkout's code runs.
    with contextlib.chdir(checkout), process(command, env, f"{url}/readyz", home / f"{name}.log"):
        body = json.dumps(lead)
        wrk(f"{url}/v1/score", body, 8, 2, home)  # warm up
        return {c: wrk(f"{url}/v1/score", body, c, seconds, home)["rps"] for c in CONNECTIONS}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--before", type=Path, required=True, help="the baseline checkout")
    parser.add_argument("--after", type=Path, default=Path.cwd(), help="default: this one")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--leads", type=int, default=8000)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed (Debian package 'wrk')")
    home = Path(tempfile.mkdtemp(prefix="leadscore-ab-"))
    print(f"serving A/B: training on {args.leads:,} generated leads in {home}", flush=True)
    model, leads = prepare(home, args.leads)
    runs: dict[str, list[dict[int, float]]] = {"before": [], "after": []}
    for i in range(args.rounds):
        for name, checkout in (("before", args.before), ("after", args.after)):
            rps = serve_and_load(checkout.resolve(), model, leads[0], home, f"{name}{i}",
                                 args.seconds)  # fmt: skip
            runs[name].append(rps)
            print(f"  round {i + 1} {name:<6} " + "  ".join(
                f"{c} conns {r:.0f} req/s" for c, r in rps.items()), flush=True)  # fmt: skip
    print("single-lead requests, median of the rounds")
    for c in CONNECTIONS:
        before = statistics.median(r[c] for r in runs["before"])
        after = statistics.median(r[c] for r in runs["after"])
        print(f"  {c:>2} connections: before {before:.0f} req/s, after {after:.0f} req/s, "
              f"after/before {after / before:.3f}")  # fmt: skip
    shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
