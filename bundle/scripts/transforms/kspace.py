"""Simulated k-space undersampling (paper section 4.1, Eq. 5): ``y = |F^-1(M ⊙ F(x))|``.

MRI uses Cartesian masks (fastMRI-style random or equispaced phase-encode lines), sparse-view CT uses radial
masks (Fourier-slice theorem: ``n`` spokes through the k-space centre ≈ ``n`` parallel-beam views).

Conventions (the benchmark's too, ``benchmarks/quality/degradation.py``; see ``docs/kspace.md``):

- FFT: orthonormal, centred 2-D FFT over the two in-plane axes (MONAI's ``fftn_centered_t``), so the
  DC sample sits at index ``N // 2`` of each axis and image-domain energy equals k-space energy.
- Cartesian random mask: MONAI's ``RandomKspaceMask`` (fastMRI ``RandomMaskFunc`` semantics): a centre band of
  ``round(N * cf)`` lines starting at ``(N - band + 1) // 2`` is always sampled, every other line is kept with
  probability ``(N / acc - band) / (N - band)``; one ``(cf, acc)`` pair is drawn uniformly per sample.
  Equispaced: MONAI's ``EquispacedKspaceMask`` (centre band plus lines every ``adjusted_acc`` from a random offset).
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
import math
import os
from collections.abc import Callable, Hashable, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from monai.apps.reconstruction.transforms.array import EquispacedKspaceMask, RandomKspaceMask
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.networks.blocks.fft_utils_t import fftn_centered_t, ifftn_centered_t
from monai.transforms import MapTransform, Randomizable, RandomizableTransform
from monai.utils import convert_to_dst_type

from scripts.prompts import MODALITIES, degradation_index, modality_index

__all__ = [
    "GOLDEN_ANGLE_DEG",
    "CartesianKspaceMask",
    "RadialKspaceMask",
    "KspaceUndersample",
    "KspaceUndersampled",
    "ModalityKspaceUndersampled",
    "fft2c",
    "ifft2c",
    "sample_seed",
]

#: Golden angle for full-diameter spokes, 180° / φ ≈ 111.246° (Winkelmann et al. 2007).
GOLDEN_ANGLE_DEG: float = 180.0 * (math.sqrt(5.0) - 1.0) / 2.0
_MAX_SEED = 2**32

# --------------------------------------------------------------------------------------------------------------
# small helpers shared with degradations.py


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
# mask generators (2-D, one plane at a time; all randomness from self.R)


class _ChoiceRecorder:
    """Mixin for MONAI's Cartesian maskers: records the (cf, acc) pair they draw, or forces one."""

    forced: tuple[float, float] | None = None
    last_choice: tuple[float, float] | None = None

    def randomize_choose_acceleration(self):  # overrides monai.apps.reconstruction KspaceMask
        if self.forced is not None:
            choice = self.forced
        else:
            choice = tuple(super().randomize_choose_acceleration())  # type: ignore[misc]
        self.last_choice = (float(choice[0]), float(choice[1]))
        return choice


class _RandomMasker(_ChoiceRecorder, RandomKspaceMask):
    pass


class _EquispacedMasker(_ChoiceRecorder, EquispacedKspaceMask):
    pass


class CartesianKspaceMask(Randomizable):
    """Cartesian line masks for one 2-D plane, drawn by MONAI's ``RandomKspaceMask`` / ``EquispacedKspaceMask``.

    Args:
        center_fractions, accelerations: paired lists; one pair is drawn uniformly per sample (MONAI/fastMRI).
        pattern: ``"random"`` (fastMRI ``RandomMaskFunc``) or ``"equispaced"``.
        phase_encode_axis: in-plane axis along which lines are skipped: ``-1``/``1`` = columns (last axis,
            the benchmark protocol), ``-2``/``0`` = rows.

    ``mask = CartesianKspaceMask(...)((H, W))`` gives a float32 mask. ``draw(shape, params)`` returns a boolean
    ``shape`` mask (constant along the read-out axis) and the params
    ``{"center_fraction", "acceleration"}``; pass ``params`` back to keep the same pair for further slices.
    MONAI's masker is called on a zero dummy k-space line (its mask logic and its draws from ``self.R`` are used
    unchanged; its own image output would root-sum-of-squares the channels together, so it is not used).
    """

    def __init__(
        self,
        center_fractions: Sequence[float] = (0.08, 0.04),
        accelerations: Sequence[float] = (4.0, 8.0),
        pattern: str = "random",
        phase_encode_axis: int = -1,
    ):
        center_fractions = [float(c) for c in _as_list(center_fractions)]
        accelerations = [float(a) for a in _as_list(accelerations)]
        if len(center_fractions) != len(accelerations) or not accelerations:
            raise ValueError(
                f"center_fractions {center_fractions} and accelerations {accelerations} must be non-empty lists "
                "of the same length (paired)."
            )
        if any(a < 1 for a in accelerations) or any(not 0 <= c < 1 for c in center_fractions):
            raise ValueError(
                "accelerations must be >= 1 and center_fractions within [0, 1) (full sampling: acceleration 1)."
            )
        if pattern not in ("random", "equispaced"):
            raise ValueError(f"pattern must be 'random' or 'equispaced', got {pattern!r}.")
        if phase_encode_axis not in (-2, -1, 0, 1):
            raise ValueError(f"phase_encode_axis must be one of -2, -1, 0, 1 (in-plane), got {phase_encode_axis}.")
        self.pattern = pattern
        self.phase_encode_axis = phase_encode_axis % 2
        cls = _RandomMasker if pattern == "random" else _EquispacedMasker
        self.masker = cls(center_fractions, accelerations, spatial_dims=2, is_complex=True)
        self.masker.R = self.R
        self.params: dict | None = None

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None):
        super().set_random_state(seed, state)
        self.masker.R = self.R
        return self

    def randomize(self, data: Any = None) -> None:  # the draws happen inside draw()
        pass

    def __call__(self, spatial_shape: Sequence[int]) -> np.ndarray:
        """A fresh float32 0/1 mask of ``spatial_shape`` (H, W); the drawn params are left in ``self.params``."""
        mask, self.params = self.draw(spatial_shape)
        return mask.astype(np.float32)

    def draw(self, shape: Sequence[int], params: Mapping | None = None) -> tuple[np.ndarray, dict]:
        n = int(shape[self.phase_encode_axis])
        if self.pattern == "equispaced":
            # MONAI's equispaced rule spaces the outer lines by acc*(num_low - n)/(num_low*acc - n), which divides
            # by zero when the centre band alone already reaches n/acc lines.
            for cf, acc in zip(self.masker.center_fractions, self.masker.accelerations):
                if round(n * cf) * acc == n:
                    raise ValueError(
                        f"equispaced mask: centre fraction {cf:g} at {acc:g}x on {n} phase-encode lines leaves no "
                        "outer lines to space (round(n * cf) * acc == n); use a smaller centre fraction."
                    )
        self.masker.R = self.R
        self.masker.forced = None if params is None else (params["center_fraction"], params["acceleration"])
        self.masker(torch.zeros(1, 1, n, 2))
        line = self.masker.mask.reshape(-1).numpy() > 0
        cf, acc = self.masker.last_choice
        view = (1, n) if self.phase_encode_axis == 1 else (n, 1)
        mask = np.broadcast_to(line.reshape(view), tuple(shape)).copy()
        return mask, {"center_fraction": cf, "acceleration": acc}

    def describe(self, params: Mapping) -> str:
        kind = "Cartesian" if self.pattern == "random" else "Equispaced Cartesian"
        return (
            f"{kind} k-space undersampling, {params['acceleration']:g}x acceleration, "
            f"centre fraction {params['center_fraction']:g}"
        )

    @staticmethod
    def level(params: Mapping) -> float:
        return float(params["acceleration"])


class RadialKspaceMask(Randomizable):
    """Radial masks: ``n`` full-diameter spokes through the k-space centre (index ``N // 2`` on each axis).

    Args:
        num_spokes: list of spoke counts; one is drawn uniformly per sample (e.g. ``(30, 60, 90)`` views).
        ordering: ``"uniform"`` (θ_i = θ0 + i·180°/n) or ``"golden"`` (θ_i = θ0 + i·111.246°, never repeats).
        random_offset: draw the rotation θ0 uniformly in [0°, 180°) per mask (else θ0 = 0).
        spoke_width: full width of a spoke in k-space samples: a sample is on spoke θ when its distance to the
            line through the centre at angle θ is at most ``spoke_width / 2`` (1 gives a one-sample line).

    Angles are measured in index space (a spoke at 0° is the centre row). Masks are point-symmetric through the
    centre (exactly, for every sample whose mirror lies in the grid: all of them for odd sizes; the unpaired
    Nyquist row/column of even sizes is the only exception).
    """

    def __init__(
        self,
        num_spokes: Sequence[int] | int = (60,),
        ordering: str = "uniform",
        random_offset: bool = True,
        spoke_width: float = 1.0,
    ):
        self.num_spokes = [int(n) for n in _as_list(num_spokes)]
        if not self.num_spokes or any(n < 1 for n in self.num_spokes):
            raise ValueError(f"num_spokes must be a non-empty list of positive integers, got {num_spokes}.")
        if ordering not in ("uniform", "golden"):
            raise ValueError(f"ordering must be 'uniform' or 'golden', got {ordering!r}.")
        if spoke_width <= 0:
            raise ValueError(f"spoke_width must be > 0, got {spoke_width}.")
        self.ordering = ordering
        self.random_offset = bool(random_offset)
        self.spoke_width = float(spoke_width)
        self.last_angles: np.ndarray | None = None
        self.params: dict | None = None

    def randomize(self, data: Any = None) -> None:
        pass

    def angles(self, n: int, offset: float = 0.0) -> np.ndarray:
        """Spoke angles in radians, in [0, π), in acquisition order."""
        step = math.radians(GOLDEN_ANGLE_DEG) if self.ordering == "golden" else math.pi / n
        return np.mod(offset + step * np.arange(n, dtype=np.float64), math.pi)

    def __call__(self, spatial_shape: Sequence[int]) -> np.ndarray:
        """A fresh float32 0/1 mask of ``spatial_shape`` (H, W); the drawn params are left in ``self.params``."""
        mask, self.params = self.draw(spatial_shape)
        return mask.astype(np.float32)

    def draw(self, shape: Sequence[int], params: Mapping | None = None) -> tuple[np.ndarray, dict]:
        if params is None:
            n = self.num_spokes[self.R.randint(0, len(self.num_spokes))]
        else:
            n = int(params["num_spokes"])
        offset = self.R.uniform(0.0, math.pi) if self.random_offset else 0.0
        theta = self.angles(n, offset)
        self.last_angles = theta
        h, w = int(shape[0]), int(shape[1])
        ky = (np.arange(h) - h // 2).astype(np.float64)[:, None]
        kx = (np.arange(w) - w // 2).astype(np.float64)[None, :]
        half = self.spoke_width / 2 + 1e-9
        mask = np.zeros((h, w), dtype=bool)
        for t in theta:
            mask |= np.abs(kx * math.sin(t) - ky * math.cos(t)) <= half
        return mask, {"num_spokes": n}

    def describe(self, params: Mapping) -> str:
        order = "golden-angle" if self.ordering == "golden" else "uniform"
        return f"Radial k-space undersampling, {params['num_spokes']} spokes ({order})"

    @staticmethod
    def level(params: Mapping) -> float:
        return float(params["num_spokes"])


def _as_list(x: Any) -> list:
    if isinstance(x, (str, bytes)) or not isinstance(x, Sequence) and not isinstance(x, np.ndarray):
        return [x]
    return list(x)


# --------------------------------------------------------------------------------------------------------------
# array transform


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

    ``__call__`` returns the degraded magnitude (float32, same type/metadata as the input) and leaves on the
    instance: ``mask`` (``(1, *spatial)`` float32), ``kspace`` (complex64 ``(C, *spatial)``, the masked noisy
    k-space, zero outside the mask), ``params`` (per sample), ``degradation`` (class id in
    ``prompts.DEGRADATION_TYPES``), ``degradation_level`` (acceleration or spoke count) and ``degradation_text``.
    For batch-first input the per-sample records are lists.
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
        who = type(self).__name__
        x, batched = check_image(img, self.spatial_dims, who, name)
        with self._temporary_seed(seed):
            if randomize:
                self.randomize()
            planes, inverse = to_planes(x, self.spatial_dims, self.slice_axis)  # (B, S, C, P0, P1)
            b, s, _, p0, p1 = planes.shape
            if not self._do_transform:
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
        self.kspace = restore(inverse(k_masked.to(torch.complex64)), _plain(img), batched, torch.complex64)
        self.mask = restore(full_mask.contiguous(), img, batched)
        self.params = params if batched else params[0]
        levels = [0.0 if p is None else self.generator.level(p) for p in params]
        texts = [self._text(p, sg) for p, sg in zip(params, sigmas)]
        self.degradation_level = levels if batched else levels[0]
        self.degradation_text = texts if batched else texts[0]
        return restore(inverse(y).contiguous(), img, batched)

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


# --------------------------------------------------------------------------------------------------------------
# dictionary transforms


class KspaceUndersampled(RandomizableTransform, MapTransform):
    """Dictionary version of :class:`KspaceUndersample` (the transform the bundle configs declare).

    For each key in ``keys`` (default ``"image"``, all keys share one mask): the clean image is copied to
    ``target_key`` (float32, before degradation; ``None`` to skip), the key becomes the zero-filled magnitude, the
    mask goes to ``mask_key`` and the complex k-space to ``kspace_key`` (each ``None`` to skip). The record of the
    degradation goes to ``degradation_key`` (int class id from ``prompts.DEGRADATION_TYPES``),
    ``degradation_level_key`` (float: acceleration or spoke count), ``degradation_text_key`` (e.g.
    ``"Cartesian k-space undersampling, 8x acceleration, centre fraction 0.04"``).

    Fixed masks for evaluation (benchmark protocol, "one fixed mask per test slice"):

    - ``seed_key="seed"`` reads a per-sample integer, e.g. ``sample_seed(global_seed, dataset, slice_index)``,
      used as the seed as is (a non-integer value, e.g. a ``case_id`` string, is hashed with :func:`sample_seed`);
      the transform's own random state is left untouched;
    - ``fixed_seed=S`` with ``seed_key`` uses ``sample_seed(S, d[seed_key])`` (e.g. ``seed_key="case_id"``);
      without ``seed_key`` it uses ``sample_seed(S, basename(filename_or_obj))``.

    Either way the mask depends only on the sample, never on the order, the worker or the epoch.
    All other args go to :class:`KspaceUndersample`.
    """

    def __init__(
        self,
        keys: KeysCollection = "image",
        target_key: str | Sequence[str] | None = "target",
        mask_key: str | None = "mask",
        kspace_key: str | None = None,
        degradation_key: str | None = "degradation",
        degradation_text_key: str | None = "degradation_text",
        degradation_level_key: str | None = "degradation_level",
        seed_key: str | None = None,
        fixed_seed: int | None = None,
        allow_missing_keys: bool = False,
        **kwargs: Any,
    ):
        MapTransform.__init__(self, keys, allow_missing_keys)
        prob = kwargs.pop("prob", 1.0)
        RandomizableTransform.__init__(self, prob)
        self.undersampler = KspaceUndersample(prob=1.0, **kwargs)
        if target_key is None:
            self.target_keys: list[str | None] = [None] * len(self.keys)
        else:
            self.target_keys = [target_key] if isinstance(target_key, str) else list(target_key)
            if len(self.target_keys) != len(self.keys):
                raise ValueError(f"target_key needs one name per key: keys={self.keys}, target_key={target_key}.")
        self.mask_key = mask_key
        self.kspace_key = kspace_key
        self.degradation_key = degradation_key
        self.degradation_text_key = degradation_text_key
        self.degradation_level_key = degradation_level_key
        self.seed_key = seed_key
        self.fixed_seed = fixed_seed
        self.undersampler.set_random_state(state=self.R)

    @property
    def degradation(self) -> int:
        return self.undersampler.degradation

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None):
        super().set_random_state(seed, state)
        self.undersampler.set_random_state(state=self.R)
        return self

    def randomize(self, data: Any = None) -> None:
        self._do_transform = True if self.prob >= 1.0 else bool(self.R.rand() < self.prob)

    def _sample_seed(self, d: Mapping, key: Hashable) -> int | None:
        if self.seed_key is None and self.fixed_seed is None:
            return None
        if self.seed_key is not None:
            if self.seed_key not in d:
                raise ValueError(f"{type(self).__name__}: seed_key {self.seed_key!r} is missing from the data dict.")
            value = d[self.seed_key]
            value = value.item() if hasattr(value, "item") else value
            if self.fixed_seed is not None:
                return sample_seed(self.fixed_seed, value)
            if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
                return int(value) % _MAX_SEED
            return sample_seed(value)  # e.g. a case id string
        name = source_name(d[key], d.get(f"{key}_meta_dict"))
        if name is None:
            raise ValueError(
                f"{type(self).__name__}: fixed_seed needs a file name (filename_or_obj in the image metadata) "
                "or a seed_key with a per-sample integer."
            )
        return sample_seed(self.fixed_seed, os.path.basename(name))

    def __call__(self, data: Mapping[Hashable, Any], randomize: bool = True) -> dict[Hashable, Any]:
        d = dict(data)
        present = [(k, t) for k, t in zip(self.keys, self.target_keys) if k in d]
        if not present:
            if self.allow_missing_keys:
                return d
            raise KeyError(f"{type(self).__name__}: none of the keys {self.keys} is in the data dict.")
        if randomize:
            self.randomize()
        first_key = present[0][0]
        seed = self._sample_seed(d, first_key)
        self.undersampler._do_transform = self._do_transform
        if seed is None:  # all keys share the mask: draw once, then replay the same state for further keys
            state = self.R.get_state()
        for i, (key, tkey) in enumerate(present):
            img = d[key]
            name = source_name(img, d.get(f"{key}_meta_dict"))
            if i > 0 and seed is None:
                self.R.set_state(state)
            degraded = self.undersampler(img, randomize=False, seed=seed, name=name)  # validates img first
            if tkey is not None:
                d[tkey] = _clean(img)
            d[key] = degraded
        us = self.undersampler
        if self.mask_key is not None:
            d[self.mask_key] = us.mask
        if self.kspace_key is not None:
            d[self.kspace_key] = us.kspace
        if self.degradation_key is not None:
            d[self.degradation_key] = us.degradation
        if self.degradation_level_key is not None:
            d[self.degradation_level_key] = us.degradation_level
        if self.degradation_text_key is not None:
            d[self.degradation_text_key] = us.degradation_text
        return d


def _clean(img: Any) -> Any:
    """A float32 copy of a (validated) clean image, keeping its type and metadata."""
    if isinstance(img, torch.Tensor):
        out = img.detach().clone()
        return out.to(torch.float32)
    return np.array(img, dtype=np.float32, copy=True)


class ModalityKspaceUndersampled(RandomizableTransform, MapTransform):
    """Modality-dependent undersampling: Cartesian for MRI, radial (sparse-view) for CT (paper section 4.1).

    Reads ``d[modality_key]`` (a name such as ``"MRI"``/``"ct"`` or a class id of ``modalities``) and applies the
    :class:`KspaceUndersampled` built for that modality's mask type. ``mask_types`` maps modality names to
    ``"cartesian"``, ``"equispaced"`` or ``"radial"``; every other argument is shared by both (Cartesian-only
    arguments are ignored by the radial one and vice versa). ``set_random_state`` seeds both from ``self.R``.
    """

    def __init__(
        self,
        keys: KeysCollection = "image",
        modality_key: str = "modality",
        mask_types: Mapping[str, str] | None = None,
        modalities: Sequence[str] = MODALITIES,
        allow_missing_keys: bool = False,
        **kwargs: Any,
    ):
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, 1.0)
        self.modality_key = modality_key
        self.modalities = tuple(modalities)
        mask_types = dict(mask_types or {"MRI": "cartesian", "CT": "radial"})
        self.by_modality: dict[int, KspaceUndersampled] = {}
        for mod, mtype in mask_types.items():
            self.by_modality[modality_index(mod, self.modalities)] = KspaceUndersampled(
                keys=keys, allow_missing_keys=allow_missing_keys, mask_type=mtype, **kwargs
            )
        self.set_random_state(state=self.R)

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None):
        super().set_random_state(seed, state)
        for t in self.by_modality.values():
            t.set_random_state(state=self.R)
        return self

    def randomize(self, data: Any = None) -> None:
        pass

    def __call__(self, data: Mapping[Hashable, Any], randomize: bool = True) -> dict[Hashable, Any]:
        if self.modality_key not in data:
            raise ValueError(f"{type(self).__name__}: the data dict has no {self.modality_key!r} entry.")
        mod = data[self.modality_key]
        mod = mod.item() if hasattr(mod, "item") else mod
        idx = modality_index(mod, self.modalities)
        if idx not in self.by_modality:
            names = [self.modalities[i] for i in self.by_modality]
            raise ValueError(f"{type(self).__name__}: no mask type configured for modality {mod!r} (have {names}).")
        return self.by_modality[idx](data, randomize=randomize)
