"""Progress and end-of-run summary of inference, and saving evaluation inputs next to the outputs.

- :class:`InferenceProgress` (attached to the inference evaluator) logs every volume as it finishes (its number of
  slices, seconds, seconds per slice and the estimated time left) and prints a summary when the run completes:
  volumes and slices processed, time per slice, the files written into the output folder and the inputs that were
  set aside (``InputScreen``) with their reasons. Slice progress *inside* a volume is the ``progress`` bar of
  :class:`~scripts.workflows.inferers.SliceBySliceInferer`.
- :class:`SaveItemsHandler` writes one key of each evaluated item (``image``: the simulated degraded input the
  network saw, on the normalised [0, 1] scale) as ``<output_dir>/<sample_id>_<postfix>.nii.gz`` with MONAI's
  ``SaveImage`` (``save_degraded`` in ``evaluate.json``).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine, Events
from monai.data import MetaTensor
from monai.transforms import SaveImage

from ..flags import as_bool
from .distributed import is_main_process
from .runs import COMMAND_NAME, CONFIG_NAME

__all__ = ["InferenceProgress", "SaveItemsHandler"]

logger = logging.getLogger(__name__)


def _duration(seconds: float) -> str:
    seconds = max(0.0, float(seconds))
    if seconds < 60:
        return f"{seconds:.1f} s"
    m, s = divmod(int(round(seconds)), 60)
    return f"{m} min {s:02d} s" if m < 60 else f"{m // 60} h {m % 60:02d} min"


def _name(batch: Any, key: str) -> str:
    b = batch[0] if isinstance(batch, list) and batch else batch
    x = b.get(key) if isinstance(b, Mapping) else None
    meta = x.meta if isinstance(x, MetaTensor) else {}
    name = meta.get("filename_or_obj", "?")
    if isinstance(name, (list, tuple)):
        name = name[0] if name else "?"
    return os.path.basename(str(name))


class InferenceProgress:
    """Per-volume progress lines and the end-of-run summary of an inference run (rank 0).

    Args:
        output_dir: the folder the outputs are written to (files created or replaced during the run are listed,
            except the run folder's ``config.json`` and ``command.txt``).
        screen: the run's ``InputScreen`` (its ``errors`` are the inputs set aside); ``None``: no screening.
        slice_axis: the spatial axis the 2D network runs along (``slice_axis`` of the config).
        image_key: the input image of each batch.
        max_listed: at most this many written files are named one by one (then a count).
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        screen: Any = None,
        slice_axis: int = -1,
        image_key: str = "image",
        max_listed: int = 20,
    ) -> None:
        self.output_dir = Path(output_dir)
        self.screen = screen
        self.slice_axis = int(slice_axis)
        self.image_key = image_key
        self.max_listed = int(max_listed)
        self.volumes = 0
        self.slices = 0
        self.summary: str = ""

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self._start)
        engine.add_event_handler(Events.ITERATION_STARTED, self._volume_start)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._volume_done)
        engine.add_event_handler(Events.COMPLETED, self._summarise)

    def _start(self, engine: Engine) -> None:
        # a second's slack: file systems keep coarse modification times
        self._t0, self._wall0 = time.monotonic(), time.time() - 1.0
        self.volumes = self.slices = 0

    def _volume_start(self, engine: Engine) -> None:
        self._tv = time.monotonic()

    def _num_slices(self, engine: Engine) -> int:
        batch = engine.state.batch
        b = batch[0] if isinstance(batch, list) and batch else batch
        x = b.get(self.image_key) if isinstance(b, Mapping) else None
        if x is None:
            return 0
        shape = tuple(torch.as_tensor(x).shape)
        spatial = shape[1:] if len(shape) in (3, 4) else shape[2:]  # decollated (C, ...) or batched (B, C, ...)
        return int(spatial[self.slice_axis]) if len(spatial) == 3 else 1

    def _volume_done(self, engine: Engine) -> None:
        n = self._num_slices(engine)
        self.volumes += 1
        self.slices += n
        spent = time.monotonic() - self._tv
        elapsed = time.monotonic() - self._t0
        total = engine.state.epoch_length or self.volumes
        left = elapsed / self.volumes * (total - self.volumes)
        engine.logger.info(
            f"inference: volume {self.volumes}/{total} {_name(engine.state.batch, self.image_key)}: {n} slice(s) in "
            f"{_duration(spent)} ({spent / max(n, 1):.3f} s/slice); ETA {_duration(left)}"
        )

    def written(self) -> list[Path]:
        if not self.output_dir.is_dir():
            return []
        # the run folder's own record (config.json, command.txt) is not an output
        own = {self.output_dir / CONFIG_NAME, self.output_dir / COMMAND_NAME}
        found = (p for p in self.output_dir.rglob("*") if p.is_file() and p not in own)
        return sorted(p for p in found if p.stat().st_mtime >= self._wall0)

    def _summarise(self, engine: Engine) -> None:
        if not is_main_process():
            return
        elapsed = time.monotonic() - self._t0
        files = self.written()
        errors = list(getattr(self.screen, "errors", []) or [])
        lines = [
            f"== inference summary: {self.volumes} volume(s), {self.slices} slice(s) in {_duration(elapsed)} "
            f"({elapsed / max(self.slices, 1):.3f} s/slice) ==",
            f"written: {len(files)} file(s) in {self.output_dir}",
        ]
        shown = files[: self.max_listed]
        lines += [f"  {p.relative_to(self.output_dir)}" for p in shown]
        if len(files) > len(shown):
            lines.append(f"  ... and {len(files) - len(shown)} more")
        lines.append(f"failed: {len(errors)} input(s)" + (":" if errors else ""))
        lines += [f"  {e}" for e in errors]
        self.summary = "\n".join(lines)
        # print, not log: the summary is what a person reads when the run ends, whatever the log level
        print(self.summary, flush=True)


class SaveItemsHandler:
    """Save ``key`` of every evaluated (decollated) item as ``<output_dir>/<sample_id>_<postfix>.nii.gz``.

    Args:
        output_dir: the folder (created when the first item is written).
        key: the item key to save (``image``: the degraded input).
        postfix: file name suffix.
        enabled: switch (``save_degraded``); a disabled handler attaches nothing.
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        key: str = "image",
        postfix: str = "degraded",
        enabled: bool = True,
    ) -> None:
        self.output_dir = Path(output_dir)
        self.key = key
        self.postfix = postfix
        self.enabled = as_bool(enabled, "save_degraded")
        self.saver = SaveImage(
            output_dir=str(self.output_dir),
            output_ext=".nii.gz",
            output_dtype=np.float32,
            resample=False,
            separate_folder=False,
            print_log=False,
        )
        self.saved: list[Path] = []

    def attach(self, engine: Engine) -> None:
        if self.enabled:
            engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        out = engine.state.output
        items: Sequence[Any] = out if isinstance(out, list) else [out]
        batch = engine.state.batch if isinstance(engine.state.batch, list) else [engine.state.batch] * len(items)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        for i, (item, b) in enumerate(zip(items, batch)):
            if not isinstance(item, Mapping) or item.get(self.key) is None:
                continue
            # the slice samplers put sample_id (<case>_s<slice>) into the batch; the engine output lacks it
            sid = item.get("sample_id") or (b.get("sample_id") if isinstance(b, Mapping) else None)
            sid = str(sid or f"item{engine.state.iteration}_{i}")
            path = self.output_dir / f"{sid}_{self.postfix}"
            self.saver(item[self.key], filename=str(path))
            self.saved.append(path.with_name(path.name + ".nii.gz"))
