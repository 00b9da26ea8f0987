"""The practical ceiling: FastAPI + ``Booster.predict`` on the same model, nothing else.

    LEADSCORE_MINIMAL_MODEL=<model folder> uvicorn benchmarks.minimal_endpoint:app

Not part of the service and never deployed: :mod:`benchmarks.serving` runs it beside
the service on the same box to show what a hand-written endpoint costs. It takes the
model's feature vector already encoded (``{"features": [...]}``, one number per
column), scores it with every head's booster on one thread, and answers the raw
probabilities. No validation beyond FastAPI's body parsing, no feature building, no
calibration, no reasons, no log, no auth: everything the service does on top of it
is what the comparison measures.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
from fastapi import Body, FastAPI


def _boosters(folder: Path) -> list[lgb.Booster]:
    return [lgb.Booster(model_file=str(p)) for p in sorted(folder.glob("head_*.txt"))]


_HEADS: list[lgb.Booster] = []


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    _HEADS.extend(_boosters(Path(os.environ["LEADSCORE_MINIMAL_MODEL"])))  # after the fork
    yield


app = FastAPI(lifespan=_lifespan)


@app.post("/score")
def score(body: dict[str, Any] = Body(...)) -> dict[str, list[float]]:  # noqa: B008
    x = np.asarray(body["features"], dtype=np.float64)[None, :]
    return {"p": [float(h.predict(x, num_threads=1)[0]) for h in _HEADS]}
