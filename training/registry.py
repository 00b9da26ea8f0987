"""The registered model ``lead-readiness`` and the aliases that say which version serves.

Lifecycle, all through MLflow registry aliases (stages are deprecated in MLflow):

* :func:`register` adds a version from a logged model and points ``challenger`` at it.
* :func:`promote` moves ``champion`` to the challenger when its held-out metric is not worse
  than the champion's by more than an absolute tolerance. The old champion keeps the alias
  ``previous-champion`` so a bad promotion can be undone. ``challenger`` is left in place, so
  promoting twice is a harmless no-op.
* :func:`rollback` is a one-step undo: ``champion`` returns to ``previous-champion``, which is
  then removed (no history stack: a second rollback needs a new promotion first). The demoted
  version is tagged ``rolled_back_at`` and, if it is still the challenger, loses that alias so a
  later ``promote`` cannot silently re-promote it.

The metric the gate compares is the one the model was trained to be judged by: each run
tags itself with ``promotion_metric`` (the config's, by default PR-AUC of the model's last
scored stage, so a binary model is promoted on its only stage), and :func:`promote` reads it
from the challenger's run unless a metric is given.

Concurrent promotions of the same model are not serialised; run them from one place (CI job).
The command line is ``leadscore promote | rollback | models`` (``training.commands``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

import mlflow
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion, RegisteredModel
from mlflow.exceptions import MlflowException

from models.mlflow_location import redact_uri
from training.tracking import RegistryError

__all__ = [
    "CHALLENGER",
    "CHAMPION",
    "PREVIOUS",
    "PromotionDecision",
    "RegistryError",
    "RollbackResult",
    "VersionInfo",
    "describe",
    "describe_version",
    "get_alias",
    "held_out_metric",
    "promote",
    "promote_version",
    "register",
    "rollback",
]

CHALLENGER = "challenger"
CHAMPION = "champion"
PREVIOUS = "previous-champion"

DEFAULT_TOLERANCE = 0.005
#: Run tag naming the metric a version is to be promoted on (written by training.run).
PROMOTION_METRIC_TAG = "promotion_metric"
# Open-source stores create versions READY at once; the wait only matters for registries that
# copy artifacts asynchronously. Bounded so a stuck registration cannot hang a pipeline forever.
REGISTRATION_WAIT_SECONDS = 300
# Recorded when MLflow could not derive the source run itself (e.g. registering a local path).
SOURCE_RUN_TAG = "source_run_id"
# Guards the gate against float noise: 0.41 - 0.405 must count as "within 0.005".
_FLOAT_SLACK = 1e-12
_NOT_FOUND = "RESOURCE_DOES_NOT_EXIST"


@dataclass(frozen=True)
class VersionInfo:
    """One registered model version with its run's metrics and its aliases."""

    name: str
    version: str
    run_id: str | None
    metrics: dict[str, float]
    aliases: list[str]
    promotion_metric: str | None = None


@dataclass(frozen=True)
class PromotionDecision:
    """What :func:`promote` decided and why; ``reason`` is one printable sentence."""

    promoted: bool
    forced: bool
    challenger: str
    champion_before: str | None
    metric: str
    challenger_value: float
    champion_value: float | None
    tolerance: float
    reason: str

    @property
    def unchanged(self) -> bool:
        """True when the challenger already was the champion (nothing to do, not a refusal)."""
        return self.challenger == self.champion_before


@dataclass(frozen=True)
class RollbackResult:
    """What :func:`rollback` changed; ``reason`` is one printable sentence."""

    restored: str
    rolled_back: str | None
    challenger_cleared: bool
    reason: str


# --- reading -------------------------------------------------------------------------------


def get_alias(name: str, alias: str) -> VersionInfo | None:
    """The version carrying ``alias``, or None when the model or the alias does not exist.

    Looks the alias up on the registered model rather than calling
    ``get_model_version_by_alias``: a missing alias surfaces there as a generic
    INVALID_PARAMETER_VALUE error, indistinguishable from real failures.
    """
    client = MlflowClient()
    with _registry_errors(f"Reading alias {alias!r} of model {name!r}"):
        model = _find_model(client, name)
        if model is None:
            return None
        version = _versions_by_alias(model).get(alias)
        if version is None:
            return None
        return _load_version(client, model, version)


def describe(name: str) -> list[VersionInfo]:
    """All versions of the model with their aliases and run metrics, newest first."""
    client = MlflowClient()
    with _registry_errors(f"Listing versions of model {name!r}"):
        model = _find_model(client, name)
        if model is None:
            return []
        aliases = _aliases_by_version(model)
        versions = sorted(_search_versions(client, name), key=lambda v: int(v.version))
        return [_version_info(client, v, aliases) for v in reversed(versions)]


def held_out_metric(info: VersionInfo, metric: str) -> float:
    """The metric logged on the version's run; the promotion gate compares these."""
    if metric in info.metrics:
        return info.metrics[metric]
    if info.run_id is None:
        raise RegistryError(
            f"Version {info.version} of {info.name!r} has no source run, so no {metric!r}."
        )
    available = ", ".join(sorted(info.metrics)) or "none"
    raise RegistryError(
        f"Version {info.version} of {info.name!r} has no metric {metric!r} on its run "
        f"{info.run_id} (available: {available})."
    )


# --- writing -------------------------------------------------------------------------------


def register(
    model_uri: str, *, name: str, run_id: str, tags: dict[str, str] | None = None
) -> VersionInfo:
    """Register a logged model (e.g. ``models:/<model_id>``) as a new version, alias challenger.

    ``run_id`` is the run holding the held-out metrics. MLflow derives the run from ``runs:/``
    and ``models:/<model_id>`` URIs itself; we check it agrees (a mismatch means the gate would
    read the wrong metrics) and record it as a tag when MLflow could not derive it.
    """
    client = MlflowClient()
    with _registry_errors(f"Registering {model_uri} as model {name!r}"):
        created = mlflow.register_model(
            model_uri, name, await_registration_for=REGISTRATION_WAIT_SECONDS, tags=tags
        )
        version = str(created.version)
        if created.status != "READY":
            raise RegistryError(
                f"Version {version} of {name!r} is {created.status}, not READY; "
                "it was not made challenger."
            )
        if created.run_id and created.run_id != run_id:
            raise RegistryError(
                f"Version {version} of {name!r} comes from run {created.run_id}, not {run_id}; "
                "it was not made challenger."
            )
        if not created.run_id:
            client.set_model_version_tag(name, version=version, key=SOURCE_RUN_TAG, value=run_id)
        client.set_registered_model_alias(name, CHALLENGER, version)
        return _load_version(client, client.get_registered_model(name), version)


def promote(
    name: str,
    *,
    metric: str | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
    higher_is_better: bool = True,
    force: bool = False,
) -> PromotionDecision:
    """Move ``champion`` to the challenger if it passes the gate (or ``force``).

    The gate: the challenger may be worse than the champion by at most ``tolerance`` (absolute,
    in metric units), so retraining noise does not block every refresh while real regressions
    do. Without a champion the challenger is promoted. A refusal changes nothing. Without
    ``metric``, the challenger's own ``promotion_metric`` (tagged on its run) is compared.
    """
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")
    challenger = get_alias(name, CHALLENGER)
    if challenger is None:
        raise RegistryError(
            f"Model {name!r} has no {CHALLENGER!r} version; register a trained model first."
        )
    metric = metric or challenger.promotion_metric
    if not metric:
        raise RegistryError(
            f"Version {challenger.version} of {name!r} does not say which metric to promote it "
            "on (no promotion_metric tag on its run); name one with --metric."
        )
    champion = get_alias(name, CHAMPION)
    challenger_value = held_out_metric(challenger, metric)
    decide = _Decider(challenger, champion, metric, challenger_value, tolerance, force)
    if champion is not None and champion.version == challenger.version:
        return decide.unchanged()
    if champion is None:
        decision = decide.promote_first()
    else:
        decision = decide.compare(_champion_value(champion, metric, force), higher_is_better)
    if decision.promoted:
        _move_champion(name, challenger.version, champion, forced=decision.forced)
    return decision


def promote_version(name: str, version: str, *, reason: str) -> None:
    """Make ``version`` champion after a decision taken elsewhere (``leadscore retrain``).

    ``retrain`` compares challenger and champion on one shared window of recent scores,
    which the run-metric gate of :func:`promote` cannot see; the reason it gives is recorded
    on the version (tag ``promotion_reason``) before the alias moves, and the old champion
    becomes ``previous-champion`` as with any promotion, so ``rollback`` undoes it.
    """
    champion = get_alias(name, CHAMPION)
    if champion is not None and champion.version == version:
        return
    client = MlflowClient()
    with _registry_errors(f"Recording why version {version} of {name!r} is promoted"):
        client.set_model_version_tag(name, version=version, key="promotion_reason", value=reason)
    _move_champion(name, version, champion, forced=False)


def describe_version(name: str, version: str, *, description: str, tags: dict[str, str]) -> None:
    """Set a version's description and tags (what a reviewer reads in the registry UI)."""
    client = MlflowClient()
    with _registry_errors(f"Describing version {version} of model {name!r}"):
        client.update_model_version(name, version, description=description)
        for key, value in tags.items():
            client.set_model_version_tag(name, version=version, key=key, value=value)


def rollback(name: str) -> RollbackResult:
    """Return ``champion`` to the ``previous-champion`` version (one-step undo)."""
    previous = get_alias(name, PREVIOUS)
    if previous is None:
        raise RegistryError(
            f"Model {name!r} has no {PREVIOUS!r} version to roll back to "
            "(nothing was promoted over a champion, or it was already rolled back)."
        )
    champion = get_alias(name, CHAMPION)
    demoted = champion.version if champion and champion.version != previous.version else None
    challenger = get_alias(name, CHALLENGER)
    clear_challenger = (
        demoted is not None and challenger is not None and challenger.version == demoted
    )
    client = MlflowClient()
    with _registry_errors(f"Rolling back model {name!r}"):
        if demoted is not None:
            client.set_model_version_tag(name, version=demoted, key="rolled_back_at", value=_now())
            client.set_model_version_tag(
                name, version=demoted, key="rolled_back_to", value=previous.version
            )
        client.set_registered_model_alias(name, CHAMPION, previous.version)
        client.delete_registered_model_alias(name, PREVIOUS)
        if clear_challenger:
            client.delete_registered_model_alias(name, CHALLENGER)
    return RollbackResult(
        restored=previous.version,
        rolled_back=demoted,
        challenger_cleared=clear_challenger,
        reason=_rollback_reason(previous.version, demoted, clear_challenger),
    )


# --- promotion internals -------------------------------------------------------------------


@dataclass(frozen=True)
class _Decider:
    """Builds the decision and its sentence; keeps :func:`promote` readable."""

    challenger: VersionInfo
    champion: VersionInfo | None
    metric: str
    value: float
    tolerance: float
    force: bool

    def _decision(
        self, promoted: bool, champion_value: float | None, reason: str
    ) -> PromotionDecision:
        return PromotionDecision(
            promoted=promoted,
            forced=self.force and promoted,
            challenger=self.challenger.version,
            champion_before=self.champion.version if self.champion else None,
            metric=self.metric,
            challenger_value=self.value,
            champion_value=champion_value,
            tolerance=self.tolerance,
            reason=reason,
        )

    def unchanged(self) -> PromotionDecision:
        champion_value = self.value
        reason = f"Version {self.challenger.version} is already champion; nothing to do."
        return self._decision(False, champion_value, reason)

    def promote_first(self) -> PromotionDecision:
        reason = (
            f"Promoted version {self.challenger.version} to champion: no champion yet "
            f"({self.metric} {_fmt(self.value)})."
        )
        return self._decision(True, None, reason)

    def compare(self, champion_value: float | None, higher_is_better: bool) -> PromotionDecision:
        assert self.champion is not None
        ours, theirs = self.challenger.version, self.champion.version
        if champion_value is None:  # only reachable with force
            reason = (
                f"Forced promotion of version {ours} to champion: champion version {theirs} has "
                f"no {self.metric}, so the gate could not compare."
            )
            return self._decision(True, None, reason)
        shortfall = champion_value - self.value if higher_is_better else self.value - champion_value
        passes = shortfall <= self.tolerance + _FLOAT_SLACK
        figures = f"{self.metric} {_fmt(self.value)} vs {_fmt(champion_value)}"
        tol = f"tolerance {self.tolerance:g}"
        if passes and not self.force:
            reason = f"Promoted version {ours} to champion: {figures} ({tol})."
        elif self.force:
            verdict = "promoted it anyway" if passes else "refused it"
            reason = (
                f"Forced promotion of version {ours} to champion: {figures} ({tol}); "
                f"the gate alone would have {verdict}."
            )
        else:
            reason = (
                f"Refused: challenger version {ours} {self.metric} {_fmt(self.value)} is worse "
                f"than champion version {theirs} {_fmt(champion_value)} by more than "
                f"{self.tolerance:g}."
            )
        return self._decision(passes or self.force, champion_value, reason)


def _champion_value(champion: VersionInfo, metric: str, force: bool) -> float | None:
    """The champion's metric; a forced promotion may proceed when the champion lacks it."""
    try:
        return held_out_metric(champion, metric)
    except RegistryError:
        if force:
            return None
        raise


def _move_champion(
    name: str, new_version: str, champion: VersionInfo | None, *, forced: bool
) -> None:
    """Record provenance, remember the old champion, then move the alias (last, so a failure
    midway leaves the old champion serving)."""
    client = MlflowClient()
    with _registry_errors(f"Promoting version {new_version} of model {name!r}"):
        if champion is not None:
            client.set_registered_model_alias(name, PREVIOUS, champion.version)
        tags = {
            "promoted_from": champion.version if champion else "none",
            "promoted_at": _now(),
            "forced": "true" if forced else "false",
        }
        for key, value in tags.items():
            client.set_model_version_tag(name, version=new_version, key=key, value=value)
        client.set_registered_model_alias(name, CHAMPION, new_version)


def _rollback_reason(restored: str, demoted: str | None, cleared: bool) -> str:
    if demoted is None:
        reason = f"Rolled back: champion is version {restored} again."
    else:
        reason = f"Rolled back champion from version {demoted} to version {restored}."
    if cleared:
        reason += f" Version {demoted} is no longer challenger, so it cannot be re-promoted."
    return reason


# --- MLflow helpers ------------------------------------------------------------------------


@contextmanager
def _registry_errors(action: str) -> Iterator[None]:
    """Turn MLflow failures (unreachable server, bad input) into one clear RegistryError."""
    try:
        yield
    except MlflowException as exc:
        where = redact_uri(mlflow.get_registry_uri())
        raise RegistryError(f"{action} failed (registry {where}): {exc.message}") from exc


def _find_model(client: MlflowClient, name: str) -> RegisteredModel | None:
    try:
        return client.get_registered_model(name)
    except MlflowException as exc:
        if exc.error_code == _NOT_FOUND:
            return None
        raise


def _versions_by_alias(model: RegisteredModel) -> dict[str, str]:
    """alias -> version; stores disagree on whether versions are ints or strings."""
    aliases: Mapping[str, object] = model.aliases or {}
    return {alias: str(version) for alias, version in aliases.items()}


def _aliases_by_version(model: RegisteredModel) -> dict[str, list[str]]:
    """version -> aliases, from the registered model (``search_model_versions`` may omit them)."""
    result: dict[str, list[str]] = {}
    for alias, version in sorted(_versions_by_alias(model).items()):
        result.setdefault(version, []).append(alias)
    return result


def _load_version(client: MlflowClient, model: RegisteredModel, version: str) -> VersionInfo:
    found = client.get_model_version(model.name, version)
    return _version_info(client, found, _aliases_by_version(model))


def _version_info(
    client: MlflowClient, version: ModelVersion, aliases: dict[str, list[str]]
) -> VersionInfo:
    run_id = version.run_id or version.tags.get(SOURCE_RUN_TAG) or None
    metrics, tags = _run_data(client, run_id)
    return VersionInfo(
        name=version.name,
        version=str(version.version),
        run_id=run_id,
        metrics=metrics,
        aliases=aliases.get(str(version.version), []),
        promotion_metric=tags.get(PROMOTION_METRIC_TAG),
    )


def _run_data(client: MlflowClient, run_id: str | None) -> tuple[dict[str, float], dict[str, str]]:
    """Latest value of each metric on the run, and its tags; empty when the run is gone."""
    if not run_id:
        return {}, {}
    try:
        run = client.get_run(run_id)
    except MlflowException as exc:
        if exc.error_code == _NOT_FOUND:
            return {}, {}
        raise
    metrics = {key: float(value) for key, value in run.data.metrics.items()}
    return metrics, dict(run.data.tags)


def _search_versions(client: MlflowClient, name: str) -> list[ModelVersion]:
    if "'" in name:
        raise RegistryError(f"Model names containing quotes are not supported: {name!r}")
    found: list[ModelVersion] = []
    token: str | None = None
    while True:
        page = client.search_model_versions(f"name = '{name}'", page_token=token)
        found.extend(page)
        token = page.token
        if not token:
            return found


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _fmt(value: float) -> str:
    return f"{value:.3f}"
