"""Per-modality intensity normalisation to [0, 1] and modality names to class ids.

Where it sits in a pipeline: ``LoadImaged -> EnsureChannelFirstd -> ModalityNormalized -> (resize/crop) ->
KspaceUndersampled``. The degradation transforms assume [0, 1] images (their noise levels are in those units) and
do **not** re-normalise their output (benchmark protocol: the zero-filled magnitude is the network input as is).

Modes (``mode`` may be one string or a mapping modality name -> mode):

- ``"window"`` (CT in Hounsfield units): clip to ``ct_window = (low, high)`` HU and scale linearly to [0, 1]
  (MONAI ``ScaleIntensityRange(clip=True)``). Default window (-1000, 1000) HU: air -> 0, water -> 0.5, dense
  bone -> 1.
- ``"percentile"`` (MRI in arbitrary scanner units): map the ``mri_percentiles`` (default 0.5 and 99.5) of the
  image to 0 and 1 and clip (MONAI ``ScaleIntensityRange`` between the two percentiles), robust to a few
  bright outliers.
- ``"minmax"`` (already display-scaled data such as PNG slices; the benchmark protocol): per image (i.e. per 2-D
  slice for slice data) min-max scaling to [0, 1] (MONAI ``ScaleIntensity``).
- ``"none"``: only cast to float32.
- ``"auto"`` (default): CT -> ``"window"`` when the image looks like HU (minimum below -200), else ``"minmax"``;
  MRI -> ``"minmax"`` when the image looks display-scaled already (values within [0, 1], or integers within
  [0, 255] as read from 8-bit PNG), else ``"percentile"``.

A constant image becomes all zeros under ``minmax``/``percentile`` (never NaN); outputs are float32; NaN/Inf input
raises ``ValueError`` naming the file. An image processed as MRI that looks like CT in Hounsfield units (at least
``ct_hint_fraction`` of its voxels below ``ct_hint_below``, default 5 % below -500: air and lung, which MRI
magnitudes never are) gets a warning that names the file and says how to set the modality.

:class:`RestoreInputUnitsd` maps a network output back to the input's units: the de-normalised value, clipped to
the input's range, except where the normalisation had clipped the input (outside the CT window or the MRI
percentiles), which keeps the input's own value.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, ScaleIntensity, ScaleIntensityRange
from monai.utils import convert_to_dst_type

from scripts.prompts import MODALITIES, modality_index
from scripts.transforms.kspace import source_name

__all__ = [
    "NORMALIZATION_MODES",
    "ModalityNormalized",
    "ModalityToIndexd",
    "RestoreInputUnitsd",
    "ct_like_fraction",
    "normalize_intensity",
]

logger = logging.getLogger(__name__)

NORMALIZATION_MODES: tuple[str, ...] = ("auto", "window", "percentile", "minmax", "none")


def _resolve_auto(t: torch.Tensor, modality: str) -> str:
    lo, hi = float(t.min()), float(t.max())
    if modality.upper() == "CT":
        return "window" if lo < -200 else "minmax"
    if lo >= 0 and hi <= 1:
        return "minmax"
    if lo >= 0 and hi <= 255 and bool(torch.equal(t, torch.round(t))):
        return "minmax"
    return "percentile"


def normalize_intensity(
    img: Any,
    mode: str,
    modality: str = "MRI",
    ct_window: Sequence[float] = (-1000.0, 1000.0),
    mri_percentiles: Sequence[float] = (0.5, 99.5),
    name: str | None = None,
) -> tuple[Any, str]:
    """Normalise one image; returns ``(float32 image of the input's type, mode actually used)``."""
    name = name or source_name(img)
    where = f" (file: {name})" if name else ""
    t = img.as_tensor() if hasattr(img, "as_tensor") else torch.as_tensor(np.asarray(img))
    if t.is_complex():
        raise ValueError(f"ModalityNormalized: expected a real image, got complex data{where}.")
    t = t.to(torch.float32)
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"ModalityNormalized: the image contains NaN/Inf values{where}.")
    if mode not in NORMALIZATION_MODES:
        raise ValueError(f"unknown normalisation mode {mode!r}; expected one of {list(NORMALIZATION_MODES)}.")
    if mode == "auto":
        mode = _resolve_auto(t, modality)
    if mode == "none" or t.numel() == 0:
        out = t
    elif mode == "window":
        lo, hi = float(ct_window[0]), float(ct_window[1])
        if not hi > lo:
            raise ValueError(f"ct_window must be (low, high) with high > low, got {ct_window}.")
        out = ScaleIntensityRange(lo, hi, 0.0, 1.0, clip=True)(t)
    elif float(t.max()) == float(t.min()):
        out = torch.zeros_like(t)  # constant image: no contrast to scale (MONAI would divide by zero)
    elif mode == "percentile":
        lo, hi = float(mri_percentiles[0]), float(mri_percentiles[1])
        # the percentiles as MONAI's ScaleIntensityRangePercentiles computes them, checked before dividing
        a, b = (float(v) for v in np.percentile(t.numpy(), [lo, hi]))
        if b > a:
            out = ScaleIntensityRange(a, b, 0.0, 1.0, clip=True)(t)
        else:  # the percentiles coincide (a mostly-constant image): fall back to min-max
            out = ScaleIntensity(minv=0.0, maxv=1.0)(t)
    else:  # minmax
        out = ScaleIntensity(minv=0.0, maxv=1.0)(t)
    out = torch.as_tensor(out, dtype=torch.float32)
    out = torch.nan_to_num(out.as_tensor() if isinstance(out, MetaTensor) else out)
    if isinstance(img, torch.Tensor):
        res, *_ = convert_to_dst_type(out, dst=img, dtype=torch.float32)
        return res, mode
    return out.numpy(), mode


def ct_like_fraction(img: Any, below: float = -500.0) -> float:
    """Fraction of the voxels below ``below`` (air and lung in HU, which MRI magnitudes never are)."""
    t = img.as_tensor() if hasattr(img, "as_tensor") else torch.as_tensor(np.asarray(img))
    return float((t < below).sum()) / max(int(t.numel()), 1)


class ModalityNormalized(MapTransform):
    """Normalise ``keys`` to [0, 1] according to the sample's modality (see the module docstring for modes).

    Args:
        keys: image keys (default ``"image"``).
        modality_key: dict entry with the modality (name such as ``"CT"`` or class id of ``modalities``).
        mode: one mode for all modalities, or a mapping like ``{"CT": "window", "MRI": "percentile"}``.
        ct_window: HU window for ``"window"``; mri_percentiles: percentiles for ``"percentile"``.
        default_modality: used when ``modality_key`` is absent (``None``: then the dict must have it).
        mode_key: if set, the mode actually used is stored there (useful to audit ``"auto"``).
        ct_hint_below, ct_hint_fraction: warn when an image processed as MRI has at least ``ct_hint_fraction`` of its
            voxels below ``ct_hint_below`` (it looks like CT in HU); ``ct_hint_below=None`` never warns.
    """

    def __init__(
        self,
        keys: KeysCollection = "image",
        modality_key: str = "modality",
        mode: str | Mapping[str, str] = "auto",
        ct_window: Sequence[float] = (-1000.0, 1000.0),
        mri_percentiles: Sequence[float] = (0.5, 99.5),
        modalities: Sequence[str] = MODALITIES,
        default_modality: str | int | None = None,
        mode_key: str | None = None,
        ct_hint_below: float | None = -500.0,
        ct_hint_fraction: float = 0.05,
        allow_missing_keys: bool = False,
    ):
        super().__init__(keys, allow_missing_keys)
        self.modalities = tuple(modalities)
        self.ct_hint_below = None if ct_hint_below is None else float(ct_hint_below)
        self.ct_hint_fraction = float(ct_hint_fraction)
        if isinstance(mode, str):
            modes = {m: mode for m in self.modalities}
        else:
            modes = {self.modalities[modality_index(k, self.modalities)]: v for k, v in mode.items()}
        for v in modes.values():
            if v not in NORMALIZATION_MODES:
                raise ValueError(f"unknown normalisation mode {v!r}; expected one of {list(NORMALIZATION_MODES)}.")
        self.modes = modes
        self.modality_key = modality_key
        self.ct_window = tuple(ct_window)
        self.mri_percentiles = tuple(mri_percentiles)
        self.default_modality = default_modality
        self.mode_key = mode_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        mod = d.get(self.modality_key, self.default_modality)
        if mod is None:
            raise ValueError(f"ModalityNormalized: the data dict has no {self.modality_key!r} entry.")
        mod = mod.item() if hasattr(mod, "item") else mod
        name = self.modalities[modality_index(mod, self.modalities)]
        if name not in self.modes:
            raise ValueError(f"ModalityNormalized: no normalisation mode for modality {name!r}.")
        for key in self.key_iterator(d):
            if name.upper() == "MRI" and self.ct_hint_below is not None:
                frac = ct_like_fraction(d[key], self.ct_hint_below)
                if frac >= self.ct_hint_fraction:
                    file = source_name(d[key], d.get(f"{key}_meta_dict")) or f"the {key!r} image"
                    logger.warning(
                        f"{file} looks like CT in Hounsfield units ({100 * frac:.0f} % of its voxels are below "
                        f"{self.ct_hint_below:g}) but is processed as MRI: set the modality to CT (`--modality CT`, "
                        "or 'modality': 'CT' in the datalist) for the HU window and the CT prior"
                    )
            d[key], used = normalize_intensity(
                d[key],
                self.modes[name],
                name,
                self.ct_window,
                self.mri_percentiles,
                source_name(d[key], d.get(f"{key}_meta_dict")),
            )
            if self.mode_key is not None:
                d[self.mode_key] = used
        return d


class ModalityToIndexd(MapTransform):
    """Replace modality names (``"MRI"``, ``"ct"``, …) under ``keys`` by their class id in ``modalities``.

    Ids pass through (validated). A missing key gets ``default`` (a name or id) when given; otherwise it is an
    error unless ``allow_missing_keys``.
    """

    def __init__(
        self,
        keys: KeysCollection = "modality",
        modalities: Sequence[str] = MODALITIES,
        default: str | int | None = None,
        allow_missing_keys: bool = False,
    ):
        super().__init__(keys, allow_missing_keys or default is not None)
        self.modalities = tuple(modalities)
        self.default = None if default is None else modality_index(default, self.modalities)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.keys:
            if key not in d:
                if self.default is not None:
                    d[key] = self.default
                elif not self.allow_missing_keys:
                    raise KeyError(f"ModalityToIndexd: the data dict has no {key!r} entry.")
                continue
            v = d[key]
            v = v.item() if hasattr(v, "item") else v
            d[key] = modality_index(int(v) if isinstance(v, (np.integer,)) else v, self.modalities)
        return d


def _plain(x: Any) -> torch.Tensor:
    t = x.as_tensor() if isinstance(x, MetaTensor) else torch.as_tensor(np.asarray(x) if not torch.is_tensor(x) else x)
    return t.to(torch.float64)


class RestoreInputUnitsd(MapTransform):
    """Map ``keys`` (network outputs on the normalised scale, in the input's geometry) back to the input's intensity
    units, using the input itself (``raw_key``, the copy taken before :class:`ModalityNormalized`) and the affine map
    ``normalised = a * raw + b`` recorded by ``scripts.workflows.outputs.RecordIntensityMapd`` (``map_key``).

    - ``(value - b) / a``, clipped to the input's range (``clip_to_input``): the network has no information about
      intensities the input does not contain, and a constant image (mapped to 0 by the normalisation) comes back as
      its constant;
    - where the normalisation had clipped the input (``a * raw + b`` outside [0, 1]: beyond the CT window, the MRI
      percentiles), the input's value is kept (``pass_through_cut``): a bone at 3071 HU stays 3071, not the window's
      1000.

    Without a map the data are returned unchanged; without the raw copy only the de-normalisation is applied.
    ``delete_raw`` drops the raw copy afterwards.
    """

    def __init__(
        self,
        keys: KeysCollection = "restored",
        raw_key: str = "image_raw",
        map_key: str = "intensity_map",
        clip_to_input: bool = True,
        pass_through_cut: bool = True,
        delete_raw: bool = True,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.raw_key = raw_key
        self.map_key = map_key
        self.clip_to_input = clip_to_input
        self.pass_through_cut = pass_through_cut
        self.delete_raw = delete_raw

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        if self.map_key not in d:
            return d
        a, b = (float(v) for v in torch.as_tensor(d[self.map_key]).reshape(-1)[:2])
        raw = d.get(self.raw_key)
        for key in self.key_iterator(d):
            value = d[key]
            out = (_plain(value) - b) / a
            if raw is not None:
                r = _plain(raw).to(out.device)
                if tuple(r.shape) != tuple(out.shape):
                    raise ValueError(
                        f"RestoreInputUnitsd: {key!r} has shape {tuple(out.shape)} but the input copy {self.raw_key!r} "
                        f"{tuple(r.shape)}; run it after Invertd (file: {source_name(value) or '?'})."
                    )
                if self.clip_to_input:
                    out = out.clamp(float(r.min()), float(r.max()))
                if self.pass_through_cut:
                    n = a * r + b
                    out = torch.where((n < -1e-6) | (n > 1 + 1e-6), r, out)
            res, *_ = convert_to_dst_type(out.to(torch.float32), dst=value, dtype=torch.float32)
            d[key] = res
        if self.delete_raw:
            d.pop(self.raw_key, None)
        return d
