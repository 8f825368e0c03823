"""Input screening for the bundle workflows: every case is checked before (inference) or as (training) it is used,
and a case that cannot be processed is named with its file and what is wrong with it.

- :class:`InputScreen`: loads every case once before the run and sets aside the ones that cannot be processed
  (unreadable, corrupt or truncated files, 4D data, several channels, NaN/Inf voxels, empty images) with a
  message naming the file; the other cases are processed, and :meth:`InputScreen.raise_if_failed` ends the run with
  the list of rejected files (:class:`InputError`).
- :class:`CheckCased`: the same checks on each training / evaluation case as it is loaded, plus label values within
  ``0 .. num_classes - 1``; a bad case stops the run with a message naming the file (a wrong label value otherwise
  surfaces deep inside the loss as ``index 7 is out of bounds``, a 4D volume as a channel mismatch).

Both are also importable from ``scripts.workflows.io`` (the configs' ``_target_`` paths).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import LoadImage, MapTransform

__all__ = ["InputError", "InputScreen", "CheckCased"]

logger = logging.getLogger(__name__)


class InputError(RuntimeError):
    """Raised at the end of a run when some inputs were rejected (the message lists them)."""


def _describe_problem(img: Any, allow_nan: bool) -> str | None:
    """Why a loaded channel-first image cannot be processed (``None`` if it can)."""
    shape = tuple(int(s) for s in img.shape)
    channels, spatial = shape[0], shape[1:]
    if channels != 1 or len(spatial) > 3:
        return (
            f"is {len(spatial) + (channels > 1)}D data (loaded as {channels} channel(s) x {spatial}); "
            "expected one 3D volume or one single-channel 2D image"
        )
    if len(spatial) < 2:
        return f"has shape {spatial}; expected a 3D volume or a 2D image"
    if int(np.prod(spatial)) == 0:
        return f"is empty (shape {spatial})"
    t = torch.as_tensor(img)
    if not allow_nan and t.is_floating_point():
        n_nan, n_inf = int(torch.isnan(t).sum()), int(torch.isinf(t).sum())
        if n_nan or n_inf:
            return f"contains {n_nan} NaN and {n_inf} infinite voxels"
    return None


class InputScreen:
    """Load each case once and split the cases into processable (:attr:`good`) and rejected (:attr:`errors`).

    Args:
        data: the cases (``[{"image": path}, ...]``).
        keys: the keys whose files are checked.
        reader: optional MONAI image reader (name or instance) passed to ``LoadImage``.
        allow_nan: accept NaN/Inf voxels (default: reject them).
    """

    def __init__(
        self,
        data: Sequence[Mapping[str, Any]],
        keys: KeysCollection = ("image",),
        reader: Any = None,
        allow_nan: bool = False,
    ) -> None:
        self.keys = (keys,) if isinstance(keys, str) else tuple(keys)
        self.good: list[dict] = []
        self.errors: list[str] = []  # "<file>: <problem>"
        self.rejected: list[tuple[str, str]] = []  # (file, problem)
        loader = LoadImage(reader=reader, image_only=True, ensure_channel_first=True)
        for item in data:
            problem = None
            for k in self.keys:
                path = str(item.get(k, ""))
                if not path:
                    problem = (f"case {dict(item)}", f"has no {k!r} entry")
                    break
                if not os.path.exists(path):
                    problem = (path, "file not found")
                    break
                try:
                    img = loader(path)
                except Exception as e:  # corrupt, truncated, unsupported: every reader raises differently
                    msg = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
                    problem = (path, f"cannot be read ({type(e).__name__}: {msg[:300]})")
                    break
                reason = _describe_problem(img, allow_nan)
                if reason:
                    problem = (path, reason)
                    break
            if problem:
                logger.error(f"skipping input: {problem[0]}: {problem[1]}")
                self.rejected.append(problem)
                self.errors.append(f"{problem[0]}: {problem[1]}")
            else:
                self.good.append(dict(item))
        if self.errors:
            logger.error(f"{len(self.errors)} of {len(data)} inputs rejected; the other {len(self.good)} are processed")

    def summary(self) -> str:
        """The rejected inputs as a table (file, problem), for the end of the run."""
        width = min(max(len("file"), *(len(f) for f, _ in self.rejected)), 100)
        lines = [f"{'file':<{width}}  problem"] + [f"{f:<{width}}  {p}" for f, p in self.rejected]
        head = f"{len(self.errors)} input(s) could not be processed (the other {len(self.good)} were written)"
        return f"{head}:\n  " + "\n  ".join(lines)

    def raise_if_failed(self) -> None:
        """End the run listing the rejected files (call it after the run): in a ``python -m monai.bundle run``
        command as a table on stderr with exit status 1 and no traceback, elsewhere as :class:`InputError`."""
        if self.errors:
            from scripts.cli import fail

            fail(InputError(self.summary()))


def _label_problem(label: Any, num_classes: int | None) -> str | None:
    """Why a label map cannot be a target of ``num_classes`` classes (``None`` if it can)."""
    values = torch.unique(torch.as_tensor(label).detach().cpu())
    if values.is_floating_point():
        fractional = values[values != torch.round(values)]
        if fractional.numel():
            return f"has non-integer label values, e.g. {fractional[:5].tolist()}"
    if num_classes is None:
        return None
    bad = values[(values < 0) | (values >= int(num_classes))]
    if not bad.numel():
        return None
    shown = [int(v) for v in bad[:10].tolist()]
    more = f" and {bad.numel() - 10} more" if bad.numel() > 10 else ""
    return (
        f"has label value(s) {shown}{more} outside the classes 0..{int(num_classes) - 1} (num_classes {num_classes}); "
        "remap the labels or set --num_classes"
    )


class CheckCased(MapTransform):
    """Stop on a loaded case that cannot be trained or evaluated, naming the file and what is wrong with it.

    Each image under ``keys`` must be one channel of a 2D image or a 3D volume (a 4D NIfTI loads as several
    channels and is named with its shape) without NaN/Inf values, as :class:`InputScreen` requires for inference;
    the label under ``label_key`` must hold integer values in ``0 .. num_classes - 1`` (``num_classes`` ``None``:
    any integers). Put it right after ``LoadImaged`` (with ``ensure_channel_first``): training caches the result,
    so each case is checked once.

    Raises:
        ValueError: ``"<file>: <reason>"``.
    """

    def __init__(
        self,
        keys: KeysCollection = ("image", "label"),
        label_key: str | None = "label",
        num_classes: int | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.label_key = label_key
        self.num_classes = None if num_classes is None else int(num_classes)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            img = d[key]
            problem = _describe_problem(img, allow_nan=False)
            if problem is None and key == self.label_key:
                problem = _label_problem(img, self.num_classes)
            if problem:
                meta = getattr(img, "meta", None) or d.get(f"{key}_meta_dict") or {}
                name = meta.get("filename_or_obj") or f"the {key!r} of case {d.get('sample_id', '?')}"
                raise ValueError(f"{key} file {name}: {problem}.")
        return d
