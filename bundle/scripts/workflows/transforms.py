"""Workflow glue transforms: 2D slice sampling from volumes, per-sample fixed seeds, dict-output splitting.

- :class:`RandSampleSlicesd` draws ``num_samples`` random 2D slices from a 3D volume (more often slices that contain
  foreground when a label is given); 2D images pass through unchanged. Used for training.
- :class:`SampleSlicesd` takes all slices, or ``num_slices`` evenly spaced through the foreground extent, of a
  volume; deterministic, so it can be cached. Used for validation and evaluation.
- :class:`FixedSeedd` runs a random transform with a seed derived from the sample's file name and slice index, so
  validation degradations are the same in every epoch, run and process, whatever the data order.
- :class:`SplitPredictiond` splits a dict prediction (``{"seg", "restored"}``) into ``pred`` and ``restored`` keys.

Slices are returned as ``MetaTensor`` (C, H, W) with the in-plane 3×3 affine and ``slice_index`` / ``slice_axis``
in their metadata (also as plain ``slice_index`` entries of the dict, which the metrics reports use as case names).
"""

from __future__ import annotations

import hashlib
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

__all__ = [
    "RandSampleSlicesd",
    "SampleSlicesd",
    "FixedSeedd",
    "SplitPredictiond",
    "RecordIntensityMapd",
    "InverseIntensityMapd",
    "sample_seed",
]


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

    def __call__(self, data: Mapping[Hashable, Any]) -> list[dict]:
        d = dict(data)
        ref = self._ref(d)
        axis = self._axis(ref)
        if axis is None:
            return self._whole(d)
        lab = d.get(self.label_key) if self.label_key else None
        fg = _foreground_slices(lab, axis) if lab is not None else np.zeros(0, dtype=int)
        return self._slices(d, self.randomize(int(ref.shape[axis + 1]), fg), axis)


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

    def __call__(self, data: Mapping[Hashable, Any]) -> list[dict]:
        d = dict(data)
        ref = self._ref(d)
        axis = self._axis(ref)
        if axis is None:
            return self._whole(d)
        lo, hi = 0, int(ref.shape[axis + 1]) - 1
        lab = d.get(self.label_key) if self.label_key else None
        if lab is not None:
            fg = _foreground_slices(lab, axis)
            if fg.size:
                lo, hi = int(fg[0]), int(fg[-1])
        if self.num_slices is None or self.num_slices >= hi - lo + 1:
            idx = list(range(lo, hi + 1))
        else:
            idx = sorted({int(round(v)) for v in np.linspace(lo, hi, self.num_slices + 2)[1:-1]})
        return self._slices(d, idx, axis)


def sample_seed(data: Mapping, base_seed: int = 0, key: str = "image", id_key: str = "sample_id") -> int:
    """A 31-bit seed from ``base_seed`` and the sample's id (``data[id_key]``, set by the slice samplers) or else its
    file name and slice index; stable across processes and machines."""
    if id_key in data:
        token = f"{base_seed}|{data[id_key]}"
        return int.from_bytes(hashlib.sha256(token.encode()).digest()[:4], "little") & 0x7FFFFFFF
    name = ""
    x = data.get(key)
    if isinstance(x, MetaTensor):
        name = str(x.meta.get("filename_or_obj", ""))
    elif f"{key}_meta_dict" in data:
        name = str(data[f"{key}_meta_dict"].get("filename_or_obj", ""))
    token = f"{base_seed}|{name}|{data.get('slice_index', '')}"
    return int.from_bytes(hashlib.sha256(token.encode()).digest()[:4], "little") & 0x7FFFFFFF


class FixedSeedd(Transform):
    """Apply a random ``transform`` with a seed derived per sample (:func:`sample_seed`).

    The result depends only on the sample (file name, slice index) and ``seed``, not on the order in which samples
    are visited or on the worker, so validation masks are identical in every epoch and run. Not a
    ``Randomizable`` itself, so ``CacheDataset`` caches its output.
    """

    def __init__(self, transform: Any, seed: int = 0, key: str = "image") -> None:
        if not isinstance(transform, (Randomizable, RandomizableTrait)) or not hasattr(transform, "set_random_state"):
            raise TypeError(f"FixedSeedd needs a Randomizable transform, got {type(transform).__name__}.")
        self.transform = transform
        self.seed = int(seed)
        self.key = key

    def __call__(self, data: Mapping[Hashable, Any]) -> Any:
        self.transform.set_random_state(seed=sample_seed(data, self.seed, self.key))
        return self.transform(data)


class SplitPredictiond(MapTransform):
    """Split a dict prediction into separate keys: ``d[key] = {"seg": S, "restored": R, ...}`` becomes
    ``d[key] = S`` and ``d["restored"] = R`` (per ``mapping``); other entries are dropped. Tensors pass through.
    """

    def __init__(
        self,
        keys: KeysCollection = "pred",
        mapping: Mapping[str, str] | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.mapping = dict(mapping) if mapping is not None else {"seg": "pred", "restored": "restored"}

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            value = d[key]
            if not isinstance(value, Mapping):
                continue
            del d[key]
            for src, dst in self.mapping.items():
                if src in value and value[src] is not None:
                    d[dst] = value[src]
        return d


class RecordIntensityMapd(MapTransform):
    """Record the affine intensity map ``normalised = a * raw + b`` of a normalisation step, so that network outputs
    can be mapped back to the input's intensity units (:class:`InverseIntensityMapd`).

    Put a copy of the raw image under ``raw_key`` before the normalisation (``CopyItemsd``) and this transform after
    it: ``(a, b)`` is fitted by least squares on the voxels the normalisation did not clip (0 < value < 1), which
    recovers window, percentile and min-max scaling exactly. Stores a float64 tensor ``[a, b]`` in ``map_key`` and
    removes the raw copy (``delete_raw``). Falls back to the identity when fewer than two distinct values remain.
    """

    def __init__(
        self,
        keys: KeysCollection = "image",
        raw_key: str = "image_raw",
        map_key: str = "intensity_map",
        delete_raw: bool = True,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.raw_key = raw_key
        self.map_key = map_key
        self.delete_raw = delete_raw

    @staticmethod
    def fit(raw: Any, norm: Any, eps: float = 1e-6) -> torch.Tensor:
        r = torch.as_tensor(np.asarray(convert_to_tensor(raw).detach().cpu(), dtype=np.float64)).reshape(-1)
        n = torch.as_tensor(np.asarray(convert_to_tensor(norm).detach().cpu(), dtype=np.float64)).reshape(-1)
        m = (n > eps) & (n < 1 - eps) & torch.isfinite(r)
        if int(m.sum()) < 2 or float(r[m].std()) == 0.0:
            return torch.tensor([1.0, 0.0], dtype=torch.float64)
        r, n = r[m], n[m]
        a = float(((r - r.mean()) * (n - n.mean())).sum() / ((r - r.mean()) ** 2).sum())
        if a == 0.0 or not np.isfinite(a):
            return torch.tensor([1.0, 0.0], dtype=torch.float64)
        return torch.tensor([a, float(n.mean() - a * r.mean())], dtype=torch.float64)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            if self.raw_key not in d:
                raise KeyError(f"RecordIntensityMapd: no raw copy {self.raw_key!r} (add CopyItemsd before it).")
            d[self.map_key] = self.fit(d[self.raw_key], d[key])
        if self.delete_raw:
            d.pop(self.raw_key, None)
        return d


class InverseIntensityMapd(MapTransform):
    """Map ``keys`` back to raw intensity units with the ``[a, b]`` of :class:`RecordIntensityMapd`:
    ``raw = (value - b) / a``. Missing maps leave the data unchanged."""

    def __init__(self, keys: KeysCollection = "restored", map_key: str = "intensity_map", allow_missing_keys=False):
        super().__init__(keys, allow_missing_keys)
        self.map_key = map_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        d = dict(data)
        if self.map_key not in d:
            return d
        a, b = (float(v) for v in torch.as_tensor(d[self.map_key]).reshape(-1)[:2])
        for key in self.key_iterator(d):
            d[key] = (d[key] - b) / a
        return d
