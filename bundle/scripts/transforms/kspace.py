"""Simulated k-space undersampling (paper section 4.1, Eq. 5): ``y = |F^-1(M ⊙ F(x))|``: the FFT helpers and the
array transform :class:`KspaceUndersample`.

The package follows MONAI's array / dictionary split (``monai.apps.reconstruction.transforms``):

- ``kspace_masks.py``: the mask generators, :class:`CartesianKspaceMask` (MRI, fastMRI-style random or equispaced
  phase-encode lines) and :class:`RadialKspaceMask` (sparse-view CT: ``n`` spokes through the k-space centre ≈
  ``n`` parallel-beam views, Fourier-slice theorem);
- this module: :func:`fft2c` / :func:`ifft2c`, :func:`sample_seed`, the image checks shared with
  ``degradations.py``, and :class:`KspaceUndersample`, whose :meth:`~KspaceUndersample.undersample` returns a
  :class:`KspaceRecord` (image, mask, k-space, degradation record);
- ``kspace_dict.py``: the dictionary transforms :class:`KspaceUndersampled` and :class:`ModalityKspaceUndersampled`,
  thin wrappers that store a record's fields under their keys. They (and the mask classes) are importable from
  this module too, as before.

Conventions (the benchmark's too, ``benchmarks/quality/degradation.py``; see ``docs/kspace.md``):

- FFT: orthonormal, centred 2-D FFT over the two in-plane axes (MONAI's ``fftn_centered_t``), so the
  DC sample sits at index ``N // 2`` of each axis and image-domain energy equals k-space energy.
- Masks: see ``kspace_masks.py``; one ``(cf, acc)`` pair (or spoke count) is drawn per sample.
- The degraded input is the magnitude of the zero-filled inverse FFT, not re-normalised.
- Images are channel-first ``(C, H, W)`` (``spatial_dims=2``) or ``(C, H, W, D)`` (``spatial_dims=3``, processed
  slice-wise along ``slice_axis``), optionally with a leading batch axis. All channels of a sample share a mask.

All randomness comes from the transform's ``self.R`` (``set_random_state`` is forwarded to every mask generator),
so ``monai.utils.set_determinism`` plus MONAI's ``DataLoader`` worker seeding make the masks reproducible. For
evaluation, ``KspaceUndersampled(seed_key=..., fixed_seed=...)`` draws one fixed mask per sample from a seed that
depends only on the sample (see :func:`sample_seed`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from monai.networks.blocks.fft_utils_t import fftn_centered_t, ifftn_centered_t
from monai.transforms import RandomizableTransform
from monai.utils import convert_to_dst_type

from scripts.prompts import degradation_index
from scripts.transforms.kspace_masks import GOLDEN_ANGLE_DEG, CartesianKspaceMask, RadialKspaceMask

__all__ = [
    "GOLDEN_ANGLE_DEG",
    "CartesianKspaceMask",
    "RadialKspaceMask",
    "KspaceRecord",
    "KspaceUndersample",
    "fft2c",
    "ifft2c",
    "sample_seed",
]

_MAX_SEED = 2**32
#: the dictionary transforms, defined in kspace_dict.py (which imports this module) and importable from here
_DICT_TRANSFORMS = ("KspaceUndersampled", "ModalityKspaceUndersampled")


def __getattr__(name: str) -> Any:
    if name in _DICT_TRANSFORMS:
        from scripts.transforms import kspace_dict

        return getattr(kspace_dict, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# --------------------------------------------------------------------------------------------------------------
# small helpers shared with degradations.py and kspace_dict.py


def fft2c(x: torch.Tensor) -> torch.Tensor:
    """Orthonormal centred 2-D FFT over the last two axes (real or complex input, complex output)."""
    # monai.data.fft_utils.fftn_centered wraps this but casts the (..., 2) real view back to the input dtype,
    # which breaks complex input; the tensor version returns the real view (..., 2).
    out = fftn_centered_t(x, spatial_dims=2, is_complex=False)
    return torch.view_as_complex(out.contiguous())


def ifft2c(k: torch.Tensor) -> torch.Tensor:
    """Orthonormal centred 2-D inverse FFT over the last two axes (complex output)."""
    out = ifftn_centered_t(k, spatial_dims=2, is_complex=False)
    return torch.view_as_complex(out.contiguous())


def sample_seed(*parts: Any) -> int:
    """A stable 32-bit seed from any printable parts, e.g. ``sample_seed(global_seed, "acdc", slice_index)``.

    Uses SHA-256 of ``"|".join(map(str, parts))`` (not Python's salted ``hash``), so it is the same in every
    process, worker and machine.
    """
    digest = hashlib.sha256("|".join(str(p) for p in parts).encode("utf-8")).digest()
    return int.from_bytes(digest[:4], "little")


def source_name(img: Any, meta: Mapping | None = None) -> str | None:
    """The file an image came from (``filename_or_obj`` of a MetaTensor or of a meta dict), if known."""
    for m in (getattr(img, "meta", None), meta):
        if isinstance(m, Mapping):
            name = m.get("filename_or_obj")
            if name is not None and not isinstance(name, (list, tuple)) and str(name):
                return str(name)
    return None


def check_image(img: Any, spatial_dims: int, who: str, name: str | None = None) -> tuple[torch.Tensor, bool]:
    """Validate a real magnitude image and return it as a float32 ``(B, C, *spatial)`` tensor plus a batch flag.

    Raises ``ValueError`` (naming the file when known) for a wrong number of dims, complex data, NaN or Inf.
    """
    name = name or source_name(img)
    where = f" (file: {name})" if name else ""
    if spatial_dims not in (2, 3):
        raise ValueError(f"{who}: spatial_dims must be 2 or 3, got {spatial_dims}.")
    if isinstance(img, torch.Tensor):
        t = img.as_tensor() if isinstance(img, MetaTensor) else img
    else:
        arr = np.asarray(img)
        if arr.dtype.kind not in "biufc":
            raise ValueError(f"{who}: expected a numeric image, got dtype {arr.dtype}{where}.")
        t = torch.as_tensor(arr)
    if t.is_complex():
        raise ValueError(
            f"{who}: expected a real magnitude image, got complex data of shape {tuple(t.shape)}{where}; "
            "pass its magnitude (abs) instead."
        )
    if t.ndim not in (spatial_dims + 1, spatial_dims + 2):
        layout = "(C, H, W)" if spatial_dims == 2 else "(C, H, W, D)"
        raise ValueError(
            f"{who}: expected a channel-first {layout} image or a batch (B, {layout[1:]} for spatial_dims="
            f"{spatial_dims}, got shape {tuple(t.shape)}{where}."
        )
    t = t.to(torch.float32)
    if not bool(torch.isfinite(t).all()):
        bad = int((~torch.isfinite(t)).sum())
        raise ValueError(f"{who}: the image contains {bad} NaN/Inf value(s){where}.")
    batched = t.ndim == spatial_dims + 2
    return (t if batched else t.unsqueeze(0)), batched


def to_planes(x: torch.Tensor, spatial_dims: int, slice_axis: int) -> tuple[torch.Tensor, Callable]:
    """``(B, C, *spatial)`` -> ``(B, S, C, P0, P1)`` (S = number of 2-D slices) and the inverse map."""
    if spatial_dims == 2:
        return x.unsqueeze(1), lambda y: y.squeeze(1)
    if not -3 <= slice_axis <= 2:
        raise ValueError(f"slice_axis must index one of the 3 spatial axes (-3..2), got {slice_axis}.")
    ax = 2 + slice_axis % 3
    return x.movedim(ax, 1), lambda y: y.movedim(1, ax)


def restore(out: torch.Tensor, like: Any, batched: bool, dtype=torch.float32) -> Any:
    """Drop the helper batch axis and return ``out`` with the type (numpy/torch/MetaTensor + meta) of ``like``."""
    if isinstance(out, MetaTensor):  # outputs of MONAI transforms: take the metadata from `like`, not from them
        out = out.as_tensor()
    if not batched:
        out = out[0]
    if isinstance(like, torch.Tensor):
        res, *_ = convert_to_dst_type(out, dst=like, dtype=dtype)
        return res
    return out.detach().cpu().numpy().astype(np.dtype(str(dtype).replace("torch.", "")), copy=False)


# --------------------------------------------------------------------------------------------------------------
# array transform


@dataclass
class KspaceRecord:
    """What one :meth:`KspaceUndersample.undersample` call produced (per-sample lists for batch input).

    Attributes:
        image: the degraded magnitude, float32, same type and metadata as the input.
        mask: ``(1, *spatial)`` float32 0/1 sampling mask (all ones when the degradation was skipped).
        kspace: complex64 ``(C, *spatial)`` masked (noisy) k-space, zero outside the mask; a plain tensor/array.
        params: the mask's draw (``{"center_fraction", "acceleration"}`` or ``{"num_spokes"}``; ``None`` if skipped).
        degradation: class id in ``prompts.DEGRADATION_TYPES``.
        degradation_level: acceleration or spoke count (0 if skipped).
        degradation_text: e.g. ``"Cartesian k-space undersampling, 8x acceleration, centre fraction 0.04"``.
    """

    image: Any
    mask: Any
    kspace: Any
    params: Any
    degradation: int
    degradation_level: Any
    degradation_text: Any


class KspaceUndersample(RandomizableTransform):
    """Zero-filled undersampling of a real image: ``y = |F^-1(M ⊙ (F(x) + n))|`` (paper Eq. 5).

    Args:
        mask_type: ``"cartesian"`` (fastMRI random lines, the default), ``"equispaced"`` or ``"radial"``.
        center_fractions, accelerations: paired Cartesian settings (one pair drawn per sample).
        phase_encode_axis: Cartesian in-plane axis whose lines are undersampled (-1 = columns, -2 = rows).
        num_spokes, spoke_ordering, random_offset, spoke_width: radial settings (see RadialKspaceMask).
        spatial_dims: 2 for ``(C, H, W)`` slices, 3 for ``(C, H, W, D)`` volumes; a leading batch axis is allowed.
        slice_axis: for 3-D, the spatial axis (0..2 or -3..-1) along which 2-D slices are taken.
        mask_per: ``"slice"`` (a fresh pattern per slice) or ``"volume"`` (one mask for all slices). The
            acceleration / spoke count is always drawn once per sample (volume); batch items are independent.
        noise_std: std of each of the real and imaginary parts of complex Gaussian noise added to the sampled
            k-space (image units, thanks to the orthonormal FFT); a float or a ``(low, high)`` range drawn
            uniformly per sample; 0 disables it.
        prob: probability of applying the degradation (MONAI convention); when skipped the image passes through
            unchanged (as float32) with an all-ones mask and ``degradation_level`` 0.

    ``__call__`` returns the degraded magnitude (float32, same type/metadata as the input). :meth:`undersample`
    returns everything one call produced as a :class:`KspaceRecord` (what :class:`KspaceUndersampled` stores in the
    data dict): the image, ``mask`` (``(1, *spatial)`` float32), ``kspace`` (complex64 ``(C, *spatial)``, the masked
    noisy k-space, zero outside the mask), ``params`` (per sample), ``degradation`` (class id in
    ``prompts.DEGRADATION_TYPES``), ``degradation_level`` (acceleration or spoke count) and ``degradation_text``.
    For batch-first input the per-sample records are lists. The fields of the last call (all but the image) are
    also kept as attributes of the same names, for interactive use.
    """

    def __init__(
        self,
        mask_type: str = "cartesian",
        center_fractions: Sequence[float] = (0.08, 0.04),
        accelerations: Sequence[float] = (4.0, 8.0),
        phase_encode_axis: int = -1,
        num_spokes: Sequence[int] | int = (30, 60, 90),
        spoke_ordering: str = "uniform",
        random_offset: bool = True,
        spoke_width: float = 1.0,
        spatial_dims: int = 2,
        slice_axis: int = -1,
        mask_per: str = "slice",
        noise_std: float | Sequence[float] = 0.0,
        prob: float = 1.0,
    ):
        RandomizableTransform.__init__(self, prob)
        mask_type = mask_type.lower()
        if mask_type in ("cartesian", "random", "cartesian_random"):
            self.generator: CartesianKspaceMask | RadialKspaceMask = CartesianKspaceMask(
                center_fractions, accelerations, "random", phase_encode_axis
            )
            self.degradation = degradation_index("cartesian_undersampling")
        elif mask_type in ("equispaced", "cartesian_equispaced"):
            self.generator = CartesianKspaceMask(center_fractions, accelerations, "equispaced", phase_encode_axis)
            self.degradation = degradation_index("cartesian_undersampling")
        elif mask_type == "radial":
            self.generator = RadialKspaceMask(num_spokes, spoke_ordering, random_offset, spoke_width)
            self.degradation = degradation_index("radial_undersampling")
        else:
            raise ValueError(f"mask_type must be 'cartesian', 'equispaced' or 'radial', got {mask_type!r}.")
        if mask_per not in ("slice", "volume"):
            raise ValueError(f"mask_per must be 'slice' or 'volume', got {mask_per!r}.")
        lo, hi = (noise_std, noise_std) if np.isscalar(noise_std) else tuple(noise_std)
        if not 0 <= lo <= hi:
            raise ValueError(f"noise_std must be >= 0 or a (low, high) range, got {noise_std}.")
        self.mask_type = mask_type
        self.spatial_dims = spatial_dims
        self.slice_axis = slice_axis
        self.mask_per = mask_per
        self.noise_range = (float(lo), float(hi))
        self.generator.R = self.R
        self._reset_records()

    # ---- randomness
    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None):
        super().set_random_state(seed, state)
        self.generator.set_random_state(state=self.R)
        return self

    @contextmanager
    def _temporary_seed(self, seed: int | None):
        if seed is None:
            yield
            return
        saved = self.R
        try:
            self.set_random_state(seed=int(seed) % _MAX_SEED)
            yield
        finally:
            self.set_random_state(state=saved)

    def randomize(self, data: Any = None) -> None:
        # MONAI draws R.rand() < prob; skip that draw when prob == 1 so that a seeded mask is exactly the
        # MONAI/fastMRI draw sequence for that seed (see tests: reference implementation of the protocol).
        self._do_transform = True if self.prob >= 1.0 else bool(self.R.rand() < self.prob)

    def _reset_records(self) -> None:
        self.mask: Any = None
        self.kspace: Any = None
        self.params: Any = None
        self.degradation_level: Any = None
        self.degradation_text: Any = None

    # ---- main
    def __call__(self, img: Any, randomize: bool = True, seed: int | None = None, name: str | None = None) -> Any:
        """Degrade ``img``; ``seed`` (optional) draws this call's mask from its own generator, leaving ``self.R``."""
        return self.undersample(img, randomize=randomize, seed=seed, name=name).image

    def undersample(
        self,
        img: Any,
        randomize: bool = True,
        seed: int | None = None,
        name: str | None = None,
        apply: bool | None = None,
    ) -> KspaceRecord:
        """Degrade ``img`` and return the image with its mask, k-space and degradation record.

        Args:
            img: real ``(C, *spatial)`` image, or a batch of them.
            randomize: draw whether to degrade (``prob``) first, as ``__call__`` does.
            seed: draw this call's mask from a generator seeded with it, leaving ``self.R`` as it was.
            name: the image's file name, for error messages (default: from its metadata).
            apply: degrade (``True``) or pass through (``False``) regardless of ``prob`` and without drawing the
                ``prob`` decision (what a dictionary transform that drew it itself passes); ``None``: draw it
                (when ``randomize``) or use the last draw.
        """
        who = type(self).__name__
        x, batched = check_image(img, self.spatial_dims, who, name)
        with self._temporary_seed(seed):
            if randomize and apply is None:
                self.randomize()
            do_transform = self._do_transform if apply is None else bool(apply)
            planes, inverse = to_planes(x, self.spatial_dims, self.slice_axis)  # (B, S, C, P0, P1)
            b, s, _, p0, p1 = planes.shape
            if not do_transform:
                mask = torch.ones((b, 1, 1, p0, p1), dtype=torch.float32, device=x.device)
                params = [None] * b
                sigmas = [0.0] * b
            else:
                masks, params, sigmas = [], [], []
                n_masks = s if self.mask_per == "slice" else 1
                for _ in range(b):
                    prm = None
                    per_sample = []
                    for _ in range(n_masks):
                        m, prm = self.generator.draw((p0, p1), prm)
                        per_sample.append(m)
                    masks.append(np.stack(per_sample))
                    params.append(prm)
                    lo, hi = self.noise_range
                    sigmas.append(float(self.R.uniform(lo, hi)) if hi > lo else lo)
                mask = torch.as_tensor(np.stack(masks)[:, :, None], dtype=torch.float32, device=x.device)
            k = fft2c(planes)
            noise_np = None
            if any(sg > 0 for sg in sigmas):
                shape = (b, s, planes.shape[2], p0, p1)
                noise_np = self.R.standard_normal(shape + (2,)).astype(np.float32)
            k_masked = k * mask
            if noise_np is not None:
                sg = torch.as_tensor(sigmas, dtype=torch.float32, device=x.device).view(b, 1, 1, 1, 1)
                noise = torch.view_as_complex(torch.as_tensor(noise_np, device=x.device)) * sg
                k_masked = k_masked + noise * mask
            y = ifft2c(k_masked).abs().to(torch.float32)
        full_mask = inverse(mask.expand(b, s, 1, p0, p1))
        levels = [0.0 if p is None else self.generator.level(p) for p in params]
        texts = [self._text(p, sg) for p, sg in zip(params, sigmas)]
        record = KspaceRecord(
            image=restore(inverse(y).contiguous(), img, batched),
            mask=restore(full_mask.contiguous(), img, batched),
            kspace=restore(inverse(k_masked.to(torch.complex64)), _plain(img), batched, torch.complex64),
            params=params if batched else params[0],
            degradation=self.degradation,
            degradation_level=levels if batched else levels[0],
            degradation_text=texts if batched else texts[0],
        )
        self.mask, self.kspace, self.params = record.mask, record.kspace, record.params
        self.degradation_level, self.degradation_text = record.degradation_level, record.degradation_text
        return record

    def _text(self, params: Mapping | None, sigma: float) -> str:
        if params is None:
            return "no degradation"
        text = self.generator.describe(params)
        if sigma > 0:
            text += f", k-space noise sigma {sigma:.3g}"
        return text


def _plain(img: Any) -> Any:
    """k-space is not a spatial image: return it as a plain tensor (or numpy) without the image metadata."""
    if isinstance(img, MetaTensor):
        return img.as_tensor()
    return img
