"""2D slice sampling from volumes for the workflows, and fixed per-sample seeds for evaluation degradations.

- :class:`RandSampleSlicesd` draws ``num_samples`` random 2D slices from a 3D volume (more often slices that contain
  foreground when a label is given); 2D images pass through unchanged. Used for training.
- :class:`SampleSlicesd` takes all slices, or ``num_slices`` evenly spaced through the foreground extent, of a
  volume; deterministic, so it can be cached. Used for validation and evaluation.
- :class:`FixedSeedd` runs a random transform with a seed derived from the sample's id (set by the samplers) or
  file name (:func:`scripts.transforms.sample_seed`), so validation degradations are the same in every epoch, run
  and process, whatever the data order. It is the configs' one idiom for fixed evaluation seeds.

Slices are returned as ``MetaTensor`` (C, H, W) with the in-plane 3×3 affine and ``slice_index`` / ``slice_axis``
in their metadata (also as plain ``slice_index`` entries of the dict, which the metrics reports use as case names),
and a ``sample_id`` such as ``case_07_s012``.

(This module was ``scripts.workflows.transforms``; the output transforms moved to ``scripts.workflows.outputs``.)
"""

from __future__ import annotations

import copy
import os
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Randomizable, RandomizableTrait, Transform
from monai.transforms.traits import MultiSampleTrait
from monai.utils import convert_to_tensor

from ..transforms.kspace import sample_seed, source_name

__all__ = ["RandSampleSlicesd", "SampleSlicesd", "FixedSeedd"]


def _spatial_ndim(x: Any) -> int:
    return int(np.ndim(x)) - 1  # channel-first


def _take_slice(x: Any, axis: int, index: int) -> MetaTensor:
    """Slice ``index`` of channel-first ``x`` (C, *spatial) along spatial ``axis`` as a 2D MetaTensor."""
    t = convert_to_tensor(x, track_meta=True)
    sl = t.select(axis + 1, index)
    arr = sl.as_tensor() if isinstance(sl, MetaTensor) else sl
    meta: dict[str, Any] = {}
    affine = None
    if isinstance(t, MetaTensor):
        meta = {k: v for k, v in t.meta.items() if k not in ("affine", "original_affine", "spatial_shape")}
        a = t.affine.detach().cpu().to(torch.float64)
        keep = [i for i in range(3) if i != axis]
        affine = torch.eye(3, dtype=torch.float64)
        affine[:2, :2] = a[np.ix_(keep, keep)]
        affine[:2, 2] = a[keep, 3]
    meta.update({"slice_index": int(index), "slice_axis": int(axis)})
    return MetaTensor(arr.clone(), affine=affine, meta=meta)


def _foreground_slices(label: Any, axis: int) -> np.ndarray:
    lab = np.asarray(convert_to_tensor(label).detach().cpu())
    reduce_axes = tuple(i for i in range(lab.ndim) if i != axis + 1)
    return np.flatnonzero((lab > 0).any(axis=reduce_axes))


def _stem(x: Any) -> str:
    name = str(x.meta.get("filename_or_obj", "")) if isinstance(x, MetaTensor) else ""
    base = os.path.basename(name.rstrip("/")) or "case"
    for ext in (".nii.gz", ".nii", ".mha", ".mhd", ".nrrd", ".nhdr", ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".dcm"):
        if base.lower().endswith(ext):
            return base[: -len(ext)]
    return base


class _SliceBase(MapTransform):
    def __init__(
        self,
        keys: KeysCollection,
        axis: int = -1,
        label_key: str | None = None,
        allow_missing_keys: bool = False,
        id_key: str = "sample_id",
    ):
        super().__init__(keys, allow_missing_keys)
        self.axis = int(axis)
        self.label_key = label_key
        self.id_key = id_key

    def _ref(self, d: Mapping) -> Any:
        for k in self.key_iterator(dict(d)):
            return d[k]
        raise KeyError(f"none of the keys {self.keys} is in the data (keys: {sorted(map(str, d))}).")

    def _axis(self, ref: Any) -> int | None:
        """The slicing axis of a 3D sample, or None for a 2D sample (which is returned whole)."""
        n = _spatial_ndim(ref)
        if n == 2:
            return None
        if n != 3:
            name, shape = type(self).__name__, tuple(ref.shape)
            raise ValueError(f"{name} expects 2D or 3D channel-first images, got shape {shape}.")
        return self.axis % n

    def _slices(self, d: Mapping, indices: Sequence[int], axis: int) -> list[dict]:
        out = []
        stem = _stem(self._ref(d))
        for i in indices:
            item = dict(d)
            for k in self.key_iterator(item):
                item[k] = _take_slice(item[k], axis, int(i))
            item["slice_index"] = int(i)
            item[self.id_key] = f"{stem}_s{int(i):03d}"
            out.append(item)
        return out

    def _whole(self, d: dict) -> list[dict]:
        d.setdefault("slice_index", -1)
        d[self.id_key] = _stem(self._ref(d))
        return [d]

    def indices(self, depth: int, fg: np.ndarray) -> list[int]:
        """The slices to take of a volume with ``depth`` slices, ``fg`` of which contain foreground."""
        raise NotImplementedError

    def __call__(self, data: Mapping[Hashable, Any]) -> list[dict]:
        d = dict(data)
        ref = self._ref(d)
        axis = self._axis(ref)
        if axis is None:
            return self._whole(d)
        lab = d.get(self.label_key) if self.label_key else None
        fg = _foreground_slices(lab, axis) if lab is not None else np.zeros(0, dtype=int)
        return self._slices(d, self.indices(int(ref.shape[axis + 1]), fg), axis)


class RandSampleSlicesd(Randomizable, _SliceBase, MultiSampleTrait):
    """Draw ``num_samples`` random 2D slices (with replacement) along spatial ``axis`` of 3D channel-first volumes.

    With ``label_key``, a slice is drawn from the slices that contain foreground with probability
    ``pos_fraction`` (when there are any), otherwise uniformly. 2D inputs (C, H, W) are returned as a
    one-element list unchanged.
    """

    def __init__(
        self,
        keys: KeysCollection,
        num_samples: int = 4,
        axis: int = -1,
        label_key: str | None = "label",
        pos_fraction: float = 0.75,
        allow_missing_keys: bool = False,
        id_key: str = "sample_id",
    ) -> None:
        _SliceBase.__init__(self, keys, axis, label_key, allow_missing_keys, id_key)
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}.")
        if not 0.0 <= pos_fraction <= 1.0:
            raise ValueError(f"pos_fraction must be in [0, 1], got {pos_fraction}.")
        self.num_samples = int(num_samples)
        self.pos_fraction = float(pos_fraction)

    def randomize(self, depth: int, fg: np.ndarray) -> list[int]:
        idx = []
        for _ in range(self.num_samples):
            if fg.size and self.R.rand() < self.pos_fraction:
                idx.append(int(fg[self.R.randint(fg.size)]))
            else:
                idx.append(int(self.R.randint(depth)))
        return idx

    def indices(self, depth: int, fg: np.ndarray) -> list[int]:
        return self.randomize(depth, fg)


class SampleSlicesd(_SliceBase, MultiSampleTrait):
    """All slices (``num_slices=None``) or ``num_slices`` evenly spaced slices of 3D volumes along ``axis``.

    With ``label_key``, only slices between the first and the last slice that contains foreground are used
    (falls back to the whole volume when the label is empty). Deterministic. 2D inputs are returned unchanged.
    """

    def __init__(
        self,
        keys: KeysCollection,
        num_slices: int | None = None,
        axis: int = -1,
        label_key: str | None = "label",
        allow_missing_keys: bool = False,
        id_key: str = "sample_id",
    ) -> None:
        super().__init__(keys, axis, label_key, allow_missing_keys, id_key)
        if num_slices is not None and num_slices < 1:
            raise ValueError(f"num_slices must be >= 1 or None, got {num_slices}.")
        self.num_slices = num_slices

    def indices(self, depth: int, fg: np.ndarray) -> list[int]:
        lo, hi = (int(fg[0]), int(fg[-1])) if fg.size else (0, depth - 1)
        if self.num_slices is None or self.num_slices >= hi - lo + 1:
            return list(range(lo, hi + 1))
        return sorted({int(round(v)) for v in np.linspace(lo, hi, self.num_slices + 2)[1:-1]})


class FixedSeedd(Transform):
    """Apply a random ``transform`` with a seed that depends only on the sample and ``seed``.

    The seed is :func:`scripts.transforms.sample_seed` ``(seed, data[id_key])`` when the sample has an id (the slice
    samplers set ``sample_id``), else ``sample_seed(seed, basename(filename_or_obj of data[key]))``; a sample with
    neither raises ``ValueError``. These are the seeds ``KspaceUndersampled(seed_key="sample_id", fixed_seed=seed)``
    and ``KspaceUndersampled(fixed_seed=seed)`` use, so wrapping the plain k-space transform draws the same masks.
    The result does not depend on the order in which samples are visited or on the worker, so validation inputs
    are identical in every epoch and run. Not a ``Randomizable`` itself, so ``CacheDataset`` caches its output.

    Config idiom (``train.json``): ``{"_target_": "scripts.workflows.slices.FixedSeedd",
    "transform": "%train#degradation", "seed": "@val_mask_seed"}``.
    """

    def __init__(self, transform: Any, seed: int = 0, key: str = "image", id_key: str = "sample_id") -> None:
        if not isinstance(transform, (Randomizable, RandomizableTrait)) or not hasattr(transform, "set_random_state"):
            raise TypeError(f"FixedSeedd needs a Randomizable transform, got {type(transform).__name__}.")
        self.transform = transform
        self.seed = int(seed)
        self.key = key
        self.id_key = id_key

    def seed_of(self, data: Mapping[Hashable, Any]) -> int:
        """The 32-bit seed of one sample (see the class docstring)."""
        if self.id_key in data:
            value = data[self.id_key]
            return sample_seed(self.seed, value.item() if hasattr(value, "item") else value)
        name = source_name(data.get(self.key), data.get(f"{self.key}_meta_dict"))
        if name is None:
            raise ValueError(
                f"FixedSeedd: the sample has no {self.id_key!r} and {self.key!r} has no file name (filename_or_obj); "
                "put a slice sampler before it or give the samples an id."
            )
        return sample_seed(self.seed, os.path.basename(name))

    def __call__(self, data: Mapping[Hashable, Any]) -> Any:
        # a private copy per call: CacheDataset fills its cache from several threads, and seeding the shared
        # transform let one thread draw from another's seed (validation masks differed between identical runs)
        transform = copy.deepcopy(self.transform)
        transform.set_random_state(seed=self.seed_of(data))
        return transform(data)
