"""Checkpointing for the bundle workflows: atomic writes, best model, latest state and resume.

- :func:`save_atomic` writes with ``torch.save`` to a temporary file in the target folder, flushes it to disk and
  renames it over the target (``os.replace``), so a reader (MONAI Label, an evaluation run) never sees a
  half-written file and an interrupted run never leaves a truncated checkpoint behind.
- :class:`BestModelSaver` (attached to the validation evaluator) keeps ``<save_dir>/model.pt`` = the plain
  ``state_dict`` (tensors only, loadable with ``torch.load(..., weights_only=True)``, as MONAI Label and the Model
  Zoo expect) of the network with the best key metric, and a small JSON record next to it
  (:func:`write_weights_record`: metric, value, epoch, every validation metric of that epoch, the weights' sha256
  and, with ``record``, the run that produced them: run folder, datalist, config; see ``runs.run_record``).
- :class:`LatestCheckpointSaver` (attached to the trainer) writes the full training state (model, optimizer,
  LR scheduler, trainer epoch/iteration) every ``interval`` epochs, always to the same file.
- :class:`ResumeHandler` restores that state when the trainer starts, so training continues at the next epoch.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine, Events
from monai.handlers import CheckpointLoader

from ..flags import as_bool

__all__ = [
    "save_atomic",
    "sha256sum",
    "write_weights_record",
    "unwrap_module",
    "BestModelSaver",
    "LatestCheckpointSaver",
    "ResumeHandler",
]

logger = logging.getLogger(__name__)


def save_atomic(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save(obj, path)`` through a temporary file in the same folder and an atomic ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; checkpoints are meant to be shared (MONAI Label, evaluation)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def _write_json_atomic(data: Mapping, path: Path) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=2)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def sha256sum(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def write_weights_record(weights: str | os.PathLike, record: Mapping[str, Any]) -> Path:
    """Write ``<weights>.json`` (the provenance record next to the weights): ``record`` plus the sha256 of the weights
    file as it is now. Whatever replaces the weights later without rewriting the record leaves a mismatch, which
    ``tools/package_bundle.py`` refuses to package."""
    weights = Path(weights)
    path = weights.with_name(weights.name + ".json")
    _write_json_atomic({**record, "sha256": sha256sum(weights)}, path)
    return path


def _jsonable(value: Any) -> Any:
    """A metric value as JSON can hold it (tensors and numpy scalars as floats; NaN as ``None``)."""
    try:
        f = float(value)
    except (TypeError, ValueError):
        return str(value)
    return None if math.isnan(f) else f


def unwrap_module(module: torch.nn.Module) -> torch.nn.Module:
    """The wrapped network of a ``DistributedDataParallel``/``DataParallel`` (or the module itself)."""
    while isinstance(module, (torch.nn.parallel.DistributedDataParallel, torch.nn.DataParallel)):
        module = module.module
    return module


def _plain_state_dict(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in unwrap_module(module).state_dict().items()}


class BestModelSaver:
    """Save the network's plain ``state_dict`` whenever the key metric improves (attach to the evaluator).

    Args:
        save_dir: folder of the checkpoint.
        network: the network (a DDP wrapper is unwrapped).
        filename: checkpoint file name (``model.pt``: what MONAI Label and the Model Zoo load).
        key_metric_name: metric to compare; default the evaluator's key metric.
        mode: ``"max"`` (higher is better) or ``"min"``.
        resume: start from the best value recorded next to an existing checkpoint (``<filename>.json``) instead of
            overwriting it with the first validation result (use together with resuming a training run).
        record: extra entries of the record (``runs.run_record``: which run, data and config produced the weights).
    """

    def __init__(
        self,
        save_dir: str | os.PathLike,
        network: torch.nn.Module,
        filename: str = "model.pt",
        key_metric_name: str | None = None,
        mode: str = "max",
        resume: bool = False,
        record: Mapping[str, Any] | None = None,
    ) -> None:
        if mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min', got {mode!r}.")
        self.path = Path(save_dir) / filename
        self.record_path = self.path.with_name(self.path.name + ".json")
        self.network = network
        self.key_metric_name = key_metric_name
        self.mode = mode
        self.record = dict(record or {})
        self.best: float | None = None
        self.best_epoch: int | None = None
        if as_bool(resume, "resume") and self.record_path.is_file() and self.path.is_file():
            rec = json.loads(self.record_path.read_text())
            # weights saved without validation (scripts/serving.py) have no value to beat
            if rec.get("value") is not None:
                self.best, self.best_epoch = float(rec["value"]), int(rec["epoch"])

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def _better(self, value: float) -> bool:
        if math.isnan(value):
            return False
        if self.best is None:
            return True
        return value > self.best if self.mode == "max" else value < self.best

    def __call__(self, engine: Engine) -> None:
        name = self.key_metric_name or getattr(engine.state, "key_metric_name", None)
        if name is None or name not in engine.state.metrics:
            raise KeyError(f"BestModelSaver: key metric {name!r} not in {sorted(engine.state.metrics)}.")
        value = float(engine.state.metrics[name])
        if not self._better(value):
            return
        self.best, self.best_epoch = value, int(engine.state.epoch)
        save_atomic(_plain_state_dict(self.network), self.path)
        metrics = {k: _jsonable(v) for k, v in engine.state.metrics.items()}
        entry = {"metric": name, "value": value, "epoch": self.best_epoch, "metrics": metrics, **self.record}
        write_weights_record(self.path, entry)
        logger.info(f"BestModelSaver: {name}={value:.4f} at epoch {self.best_epoch}, saved {self.path}")


class LatestCheckpointSaver:
    """Write ``{name: obj.state_dict()}`` for every object of ``save_dict`` to ``save_path`` (one file, replaced
    atomically) every ``interval`` epochs and when the run completes (attach to the trainer).

    Modules are unwrapped from DDP and stored as plain tensors, so the file is also loadable with
    ``weights_only=True`` (``ckpt["model"]`` is then a usable network ``state_dict``). The engine the handler is
    attached to is added under ``engine_key`` (default ``"trainer"``: its epoch and iteration), which
    :class:`ResumeHandler` restores; the config cannot list the trainer itself (circular reference).
    """

    def __init__(
        self,
        save_path: str | os.PathLike,
        save_dict: Mapping[str, Any],
        interval: int = 1,
        engine_key: str | None = "trainer",
    ) -> None:
        if interval < 1:
            raise ValueError(f"interval must be >= 1, got {interval}.")
        self.save_path = Path(save_path)
        self.save_dict = dict(save_dict)
        self.interval = int(interval)
        self.engine_key = engine_key
        self._saved_at: int | None = None

    def attach(self, engine: Engine) -> None:
        if self.engine_key:
            self.save_dict[self.engine_key] = engine
        engine.add_event_handler(Events.EPOCH_COMPLETED(every=self.interval), self)
        engine.add_event_handler(Events.COMPLETED, self)

    def state(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, obj in self.save_dict.items():
            if isinstance(obj, torch.nn.Module):
                out[k] = _plain_state_dict(obj)
            else:
                out[k] = obj.state_dict()
        return out

    def __call__(self, engine: Engine) -> None:
        # COMPLETED follows the last EPOCH_COMPLETED with nothing trained in between: one write is enough
        if self._saved_at == engine.state.iteration:
            return
        save_atomic(self.state(), self.save_path)
        self._saved_at = engine.state.iteration
        logger.info(f"LatestCheckpointSaver: epoch {engine.state.epoch}, saved {self.save_path}")


class ResumeHandler:
    """Restore a :class:`LatestCheckpointSaver` file when the trainer starts (``enabled=True``).

    The engine it is attached to is loaded from the ``engine_key`` entry (default ``"trainer"``): that sets its epoch
    and iteration, so ``trainer.run()`` continues at the next epoch up to ``max_epochs`` (MONAI's
    ``CheckpointLoader`` does the loading). A missing file is an error that names the path.
    """

    def __init__(
        self,
        load_path: str | os.PathLike,
        load_dict: Mapping[str, Any],
        enabled: bool = True,
        map_location: Any = "cpu",
        strict: bool = True,
        engine_key: str | None = "trainer",
    ) -> None:
        self.load_path = Path(load_path)
        self.enabled = as_bool(enabled, "resume")
        self.load_dict = {k: unwrap_module(v) if isinstance(v, torch.nn.Module) else v for k, v in load_dict.items()}
        self.map_location = map_location
        self.strict = strict
        self.engine_key = engine_key
        self.loader: CheckpointLoader | None = None

    def attach(self, engine: Engine) -> None:
        if not self.enabled:
            return
        if not self.load_path.is_file():
            raise FileNotFoundError(
                f"resume=true but the latest checkpoint {str(self.load_path)!r} does not exist; train without "
                "--resume first, or point --latest_ckpt at an existing file."
            )
        load_dict = dict(self.load_dict)
        if self.engine_key:
            load_dict[self.engine_key] = engine
        self.loader = CheckpointLoader(
            load_path=str(self.load_path), load_dict=load_dict, map_location=self.map_location, strict=self.strict
        )
        self.loader.attach(engine)
        engine.add_event_handler(Events.STARTED, self._log)

    def _log(self, engine: Engine) -> None:
        logger.info(f"ResumeHandler: resumed from {self.load_path} at epoch {engine.state.epoch}")
