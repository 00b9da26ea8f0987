"""A new model is opened and checked in a separate process before any worker loads it.

LightGBM does not raise on every broken file: a truncated head makes it print
``[LightGBM] [Fatal] Model format error`` and abort the whole process, which no
``try`` catches. So the first time a worker meets a model's files it runs
``python -m serving.model_verify`` on them: that process loads every head, the whole
model, checks the spec it was trained on and its golden rows, and writes the verdict
to a file. Whatever happens there (an exception, an abort, a hang, running out of
memory) the worker only learns "no, because ..." and keeps serving what it serves.

Verification is remembered by the SHA-256 of the files (in this process, and in a
marker beside a published copy, so other workers and restarts do not pay for the
check again): the same bytes load the same way. A checked folder is never modified
afterwards (see :mod:`serving.model_store`), so what was checked is what is loaded.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import os
import resource
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

MARKER = ".verified.json"
#: Address space the checking process may use; a hostile file cannot take the machine.
CHECK_MEMORY_BYTES = 8 * 1024**3

_verified_here: set[tuple[str, str]] = set()  # (digest, spec) checked by this process


class ModelCheckError(RuntimeError):
    """The model's files failed their check; the message says why (no paths)."""


def digest(folder: Path) -> str:
    """SHA-256 over every file of the folder (names and bytes), the marker excepted."""
    sha = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MARKER):
        sha.update(str(path.relative_to(folder)).encode("utf-8", "surrogateescape") + b"\0")
        sha.update(path.read_bytes())
        sha.update(b"\0")
    return sha.hexdigest()


def _lightgbm_version() -> str:
    from importlib.metadata import version

    return version("lightgbm")


def _spec_tag(spec: tuple[str, int]) -> str:
    return f"{spec[0]} v{spec[1]}"


def already_verified(folder: Path, sha: str, spec: tuple[str, int]) -> bool:
    """These bytes passed the check for this spec, here or in a worker that marked them."""
    if (sha, _spec_tag(spec)) in _verified_here:
        return True
    try:
        marker = json.loads((folder / MARKER).read_text())
    except (OSError, ValueError):
        return False
    return bool(
        isinstance(marker, dict)
        and marker.get("digest") == sha
        and marker.get("spec") == _spec_tag(spec)
        and marker.get("lightgbm") == _lightgbm_version()
    )


def mark_verified(folder: Path, sha: str, spec: tuple[str, int]) -> None:
    """Write the marker (atomically) into a folder that passed its check."""
    handle, tmp = tempfile.mkstemp(dir=folder, prefix=f"{MARKER}.")
    marker = {"digest": sha, "spec": _spec_tag(spec), "lightgbm": _lightgbm_version()}
    with os.fdopen(handle, "w") as out:
        json.dump(marker, out)
    os.replace(tmp, folder / MARKER)


def verify(folder: Path, spec: tuple[str, int], *, timeout_s: float) -> str:
    """Check ``folder`` in a separate process unless these bytes passed before: its digest.

    Raises :class:`ModelCheckError` saying why the model cannot be served.
    """
    sha = digest(folder)
    if not already_verified(folder, sha, spec):
        _check_in_subprocess(folder, spec, timeout_s)
        _verified_here.add((sha, _spec_tag(spec)))
        with contextlib.suppress(OSError):  # a read-only folder is checked again next time
            mark_verified(folder, sha, spec)
    return sha


def _check_in_subprocess(folder: Path, spec: tuple[str, int], timeout_s: float) -> None:
    with tempfile.TemporaryDirectory(prefix="leadscore-verify-") as tmp:
        verdict_file = Path(tmp) / "verdict.json"
        command = [
            sys.executable, "-m", "serving.model_verify", str(folder),
            "--spec-name", spec[0], "--spec-version", str(spec[1]),
            "--verdict", str(verdict_file),
        ]  # fmt: skip
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        try:
            done = subprocess.run(
                command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env=env,
                timeout=timeout_s,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise ModelCheckError(f"checking the model took longer than {timeout_s:g} s") from None
        verdict = _read_verdict(verdict_file)
    if done.returncode == 0 and verdict.get("ok") is True:
        return
    if verdict.get("reason"):
        raise ModelCheckError(str(verdict["reason"]))
    where = f" while reading {verdict['reading']}" if verdict.get("reading") else ""
    if done.returncode < 0:
        # The signal (SIGABRT from LightGBM's own check, SIGSEGV when it reads past a
        # cut) depends on where the file was cut, not on what the user should do: it
        # goes to the log, and the message stays the same for every truncation.
        log.warning("model check killed by %s", _signal_name(-done.returncode))
        raise ModelCheckError(
            f"the model crashed its loader{where}: a file is truncated or corrupt"
        )
    raise ModelCheckError(f"the model check failed{where} (exit status {done.returncode})")


def _read_verdict(path: Path) -> dict[str, Any]:
    try:
        verdict = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return verdict if isinstance(verdict, dict) else {}


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


# --------------------------------------------------------------------------- the checker


def _write(path: Path, verdict: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(verdict))
    os.replace(tmp, path)


def _words(error: BaseException, folder: Path) -> str:
    """An exception as one short line, without the folder's path."""
    text = str(error).replace(f"{folder}{os.sep}", "").replace(str(folder), "the model folder")
    first = text.strip().splitlines()[0] if text.strip() else ""
    return f"{type(error).__name__}: {first[:300]}" if first else type(error).__name__


def check(folder: Path, spec: tuple[str, int], verdict_file: Path) -> dict[str, Any]:
    """Load and check the model; the verdict (also written before each risky step).

    Before each head is read, the verdict file says which one, so an abort inside
    LightGBM still leaves behind the name of the file that caused it.
    """
    import lightgbm as lgb

    from models.golden import check_golden
    from models.readiness import ReadinessModel

    for head in sorted(folder.glob("head_*.txt")):
        _write(verdict_file, {"ok": False, "reading": head.name})
        try:
            lgb.Booster(model_file=str(head))
        except Exception as exc:
            return {"ok": False, "reason": f"cannot read {head.name}: {_words(exc, folder)}"}
    _write(verdict_file, {"ok": False, "reading": "the model"})
    try:
        model = ReadinessModel.load(folder)
    except Exception as exc:
        return {"ok": False, "reason": f"cannot read the model: {_words(exc, folder)}"}
    trained = (model.builder.spec.name, model.builder.spec.version)
    if trained != spec:
        return {
            "ok": False,
            "reason": f"model was trained on spec {trained[0]} v{trained[1]}, the API accepts "
            f"{spec[0]} v{spec[1]}",
        }
    _write(verdict_file, {"ok": False, "reading": "the golden rows"})
    try:
        problems = check_golden(model, folder)
    except Exception as exc:
        return {"ok": False, "reason": f"golden rows cannot be checked: {_words(exc, folder)}"}
    if problems:
        return {"ok": False, "reason": f"golden rows not reproduced: {'; '.join(problems[:3])}"}
    return {"ok": True}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m serving.model_verify", description=__doc__)
    parser.add_argument("folder", type=Path)
    parser.add_argument("--spec-name", required=True)
    parser.add_argument("--spec-version", type=int, required=True)
    parser.add_argument("--verdict", type=Path, required=True)
    args = parser.parse_args(argv)
    with contextlib.suppress(ValueError, OSError):  # not every platform allows it
        resource.setrlimit(resource.RLIMIT_AS, (CHECK_MEMORY_BYTES, CHECK_MEMORY_BYTES))
    verdict = check(args.folder, (args.spec_name, args.spec_version), args.verdict)
    _write(args.verdict, verdict)
    return 0 if verdict["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
