"""Network-output glue for the workflows: dict-prediction splitting and the intensity map back to raw units.

- :class:`SplitPredictiond` splits a dict prediction (``{"seg", "restored"}``) into ``pred`` and ``restored`` keys.
- :class:`RecordIntensityMapd` records the affine map of the intensity normalisation during preprocessing, and
  :class:`InverseIntensityMapd` applies its inverse to the restored image in postprocessing (``inference.json``).

(Moved here from ``scripts.workflows.transforms``, which now only forwards the old names.)
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform
from monai.utils import convert_to_tensor

__all__ = ["SplitPredictiond", "RecordIntensityMapd", "InverseIntensityMapd"]


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
