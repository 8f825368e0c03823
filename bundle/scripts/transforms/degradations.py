"""The four visual degradation primitives of the CLIP degradation prior (paper section 3.3.3, appendix D).

One transform picks one primitive per sample from a configured subset of ``prompts.DEGRADATION_TYPES[:4]`` and
reports its class id and text:

- ``noise``: additive Gaussian noise, MONAI ``RandGaussianNoise`` (std drawn from ``noise_std``).
- ``blur``: isotropic in-plane Gaussian blur, MONAI ``GaussianSmooth`` (sigma drawn from ``blur_sigma``, pixels).
- ``motion``: rigid in-plane translation *during the acquisition*, simulated physically in k-space. Phase-encode
  lines are acquired in order along ``phase_encode_axis``; at ``1..motion_events`` random line indices the object
  jumps to a new position ``δ`` (each component uniform in ``[-s, s]``, ``s`` drawn from ``motion_shift`` px).
  Every line is multiplied by the phase ramp of the position at its acquisition time,
  ``K(k) · exp(-2πi k·δ)`` (Fourier shift theorem), giving ghosting along the phase-encode axis. k-space
  magnitudes, hence the image energy, are unchanged.
- ``low_resolution``: k-space truncation: only the central ``round(N / f)`` samples of each in-plane axis are
  kept (``f`` drawn from ``lowres_factor``), the rest is zero-filled, so the image keeps its size but loses the
  fine detail (with Gibbs ringing), as a low-resolution acquisition does.

Images are expected in [0, 1] (after :class:`scripts.transforms.intensity.ModalityNormalized`); outputs are float32
and not clipped. ``motion`` and ``low_resolution`` return the magnitude of the complex result.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import GaussianSmooth, MapTransform, RandGaussianNoise, RandomizableTransform

from scripts.prompts import DEGRADATION_PROMPTS, DEGRADATION_TYPES, degradation_index
from scripts.transforms.kspace import check_image, fft2c, ifft2c, restore, source_name, to_planes

__all__ = ["PRIMITIVES", "RandPrimitiveDegradation", "RandPrimitiveDegradationd", "motion_kspace", "truncate_kspace"]

#: The names this module can apply: the paper's four visual primitives.
PRIMITIVES: tuple[str, ...] = tuple(DEGRADATION_TYPES[:4])


def _range(value: float | Sequence[float], what: str) -> tuple[float, float]:
    lo, hi = (value, value) if np.isscalar(value) else tuple(value)
    lo, hi = float(lo), float(hi)
    if not 0 <= lo <= hi:
        raise ValueError(f"{what} must be a value >= 0 or a (low, high) range with low <= high, got {value}.")
    return lo, hi


def motion_kspace(k: torch.Tensor, shifts: np.ndarray, phase_encode_axis: int = -1) -> torch.Tensor:
    """Apply per-line rigid translations to centred k-space ``k`` (..., P0, P1).

    ``shifts`` has shape (N_pe, 2): the (axis 0, axis 1) in-plane displacement in pixels of the object while line
    ``i`` of the phase-encode axis was acquired. Uses ``F(x(r - δ))(k) = F(x)(k) exp(-2πi k·δ)`` with ``k`` in
    cycles/pixel, DC at index ``N // 2``.
    """
    p0, p1 = k.shape[-2], k.shape[-1]
    f0 = (torch.arange(p0, dtype=torch.float64) - p0 // 2) / p0
    f1 = (torch.arange(p1, dtype=torch.float64) - p1 // 2) / p1
    d = torch.as_tensor(shifts, dtype=torch.float64)
    if phase_encode_axis % 2 == 1:  # lines are columns: line j has shift d[j]
        phase = f0[:, None] * d[None, :, 0] + f1[None, :] * d[None, :, 1]
    else:  # lines are rows: line i has shift d[i]
        phase = f0[:, None] * d[:, None, 0] + f1[None, :] * d[:, None, 1]
    ramp = torch.polar(torch.ones_like(phase), -2 * math.pi * phase).to(torch.complex64).to(k.device)
    return k * ramp


def truncate_kspace(k: torch.Tensor, factor: float) -> tuple[torch.Tensor, tuple[int, int]]:
    """Keep the central ``round(N / factor)`` samples of both in-plane axes of centred k-space, zero the rest."""
    p0, p1 = k.shape[-2], k.shape[-1]
    m0, m1 = max(1, round(p0 / factor)), max(1, round(p1 / factor))
    box = torch.zeros((p0, p1), dtype=k.real.dtype, device=k.device)
    s0, s1 = p0 // 2 - m0 // 2, p1 // 2 - m1 // 2
    box[s0 : s0 + m0, s1 : s1 + m1] = 1
    return k * box, (m0, m1)


class RandPrimitiveDegradation(RandomizableTransform):
    """Apply one primitive degradation per sample, chosen among ``degradations`` (uniformly or by ``weights``).

    Args:
        degradations: subset of ``("noise", "blur", "motion", "low_resolution")``.
        weights: optional selection probabilities (normalised), one per entry of ``degradations``.
        noise_std: Gaussian noise std (image units), a value or a (low, high) range drawn uniformly.
        blur_sigma: Gaussian blur sigma in pixels, value or range.
        motion_shift: maximum translation per axis in pixels, value or range; ``motion_events``: maximum number
            of jumps (1..motion_events drawn uniformly); ``phase_encode_axis``: in-plane axis of the lines.
        lowres_factor: k-space truncation factor per axis (>= 1), value or range.
        spatial_dims, slice_axis: 2 for ``(C, H, W)``; 3 for ``(C, H, W, D)`` processed slice-wise (in-plane
            operations on the other two axes). A leading batch axis is allowed (one draw per item).
        text: ``"prompt"`` (the class prompt of ``prompts.DEGRADATION_PROMPTS``, the CLIP fine-tuning target) or
            ``"description"`` (the parameters in words, e.g. ``"Gaussian noise, sigma 0.05"``).

    After a call the instance holds ``degradation`` (class id), ``degradation_name``, ``degradation_level`` (the
    drawn noise std / blur sigma / max shift in px / truncation factor) and ``degradation_text``; lists for batches.
    """

    def __init__(
        self,
        degradations: Sequence[str] = PRIMITIVES,
        weights: Sequence[float] | None = None,
        noise_std: float | Sequence[float] = (0.02, 0.1),
        blur_sigma: float | Sequence[float] = (0.8, 2.0),
        motion_shift: float | Sequence[float] = (2.0, 8.0),
        motion_events: int = 3,
        phase_encode_axis: int = -1,
        lowres_factor: float | Sequence[float] = (2.0, 4.0),
        spatial_dims: int = 2,
        slice_axis: int = -1,
        text: str = "prompt",
    ):
        RandomizableTransform.__init__(self, 1.0)
        names = [degradations] if isinstance(degradations, str) else list(degradations)
        if not names:
            raise ValueError("degradations must name at least one primitive.")
        for n in names:
            if n not in PRIMITIVES:
                raise ValueError(f"unknown primitive degradation {n!r}; expected a subset of {list(PRIMITIVES)}.")
        self.names = names
        if weights is not None:
            w = np.asarray(weights, dtype=np.float64)
            if w.shape != (len(names),) or (w < 0).any() or w.sum() <= 0:
                raise ValueError(f"weights must be {len(names)} non-negative numbers with a positive sum.")
            self.weights: np.ndarray | None = w / w.sum()
        else:
            self.weights = None
        self.noise_std = _range(noise_std, "noise_std")
        self.blur_sigma = _range(blur_sigma, "blur_sigma")
        self.motion_shift = _range(motion_shift, "motion_shift")
        self.lowres_factor = _range(lowres_factor, "lowres_factor")
        if self.blur_sigma[0] <= 0 or self.lowres_factor[0] < 1:
            raise ValueError("blur_sigma must be > 0 and lowres_factor >= 1.")
        if int(motion_events) < 1:
            raise ValueError(f"motion_events must be >= 1, got {motion_events}.")
        if phase_encode_axis not in (-2, -1, 0, 1):
            raise ValueError(f"phase_encode_axis must be one of -2, -1, 0, 1, got {phase_encode_axis}.")
        if text not in ("prompt", "description"):
            raise ValueError(f"text must be 'prompt' or 'description', got {text!r}.")
        self.motion_events = int(motion_events)
        self.phase_encode_axis = phase_encode_axis % 2
        self.spatial_dims = spatial_dims
        self.slice_axis = slice_axis
        self.text = text
        self.noiser = RandGaussianNoise(prob=1.0, mean=0.0, std=self.noise_std[0], sample_std=False)
        self.noiser.set_random_state(state=self.R)
        self._reset_records()

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None):
        super().set_random_state(seed, state)
        self.noiser.set_random_state(state=self.R)
        return self

    def randomize(self, data: Any = None) -> None:
        self._do_transform = True

    def _reset_records(self) -> None:
        self.degradation: Any = None
        self.degradation_name: Any = None
        self.degradation_level: Any = None
        self.degradation_text: Any = None
        self.motion_shifts: Any = None

    def _uniform(self, rng: tuple[float, float]) -> float:
        return rng[0] if rng[1] <= rng[0] else float(self.R.uniform(*rng))

    # ---- primitives on (S, C, P0, P1) planes of one sample
    def _noise(self, planes: torch.Tensor) -> tuple[torch.Tensor, float, str]:
        sigma = self._uniform(self.noise_std)
        self.noiser.std = sigma
        flat = planes.reshape(-1, *planes.shape[-2:])
        out = self.noiser(flat, randomize=True)
        return torch.as_tensor(out).reshape(planes.shape), sigma, f"Gaussian noise, sigma {sigma:.3g}"

    def _blur(self, planes: torch.Tensor) -> tuple[torch.Tensor, float, str]:
        sigma = self._uniform(self.blur_sigma)
        flat = planes.reshape(-1, *planes.shape[-2:])  # channels x 2 spatial dims: an in-plane blur
        out = GaussianSmooth(sigma=sigma)(flat)
        return torch.as_tensor(out).reshape(planes.shape), sigma, f"Gaussian blur, sigma {sigma:.3g} px"

    def _motion(self, planes: torch.Tensor) -> tuple[torch.Tensor, float, str]:
        n_pe = planes.shape[-1] if self.phase_encode_axis == 1 else planes.shape[-2]
        smax = self._uniform(self.motion_shift)
        n_events = int(self.R.randint(1, self.motion_events + 1))
        times = np.sort(self.R.randint(1, max(n_pe, 2), size=n_events))
        positions = self.R.uniform(-smax, smax, size=(n_events, 2))
        shifts = np.zeros((n_pe, 2))
        for t, pos in zip(times, positions):
            shifts[t:] = pos
        self.motion_shifts = shifts
        k = motion_kspace(fft2c(planes), shifts, self.phase_encode_axis)
        out = ifft2c(k).abs().to(torch.float32)
        level = float(np.abs(positions).max())
        return out, level, f"Rigid motion during acquisition, {n_events} jump(s), up to {level:.2g} px"

    def _lowres(self, planes: torch.Tensor) -> tuple[torch.Tensor, float, str]:
        factor = self._uniform(self.lowres_factor)
        k, kept = truncate_kspace(fft2c(planes), factor)
        out = ifft2c(k).abs().to(torch.float32)
        return out, factor, f"Low resolution, k-space truncated to the central {kept[0]}x{kept[1]} ({factor:.2g}x)"

    def __call__(self, img: Any, randomize: bool = True, name: str | None = None) -> Any:
        x, batched = check_image(img, self.spatial_dims, type(self).__name__, name)
        planes, inverse = to_planes(x, self.spatial_dims, self.slice_axis)
        outs, ids, names, levels, texts = [], [], [], [], []
        for b in range(planes.shape[0]):
            choice = self.names[int(self.R.choice(len(self.names), p=self.weights))]
            fn = {"noise": self._noise, "blur": self._blur, "motion": self._motion, "low_resolution": self._lowres}
            out, level, desc = fn[choice](planes[b])
            cls = degradation_index(choice)
            outs.append(out.to(torch.float32))
            ids.append(cls)
            names.append(choice)
            levels.append(level)
            texts.append(DEGRADATION_PROMPTS[cls] if self.text == "prompt" else desc)
        y = inverse(torch.stack(outs)).contiguous()
        pick = (lambda v: v) if batched else (lambda v: v[0])
        self.degradation, self.degradation_name = pick(ids), pick(names)
        self.degradation_level, self.degradation_text = pick(levels), pick(texts)
        return restore(y, img, batched)


class RandPrimitiveDegradationd(RandomizableTransform, MapTransform):
    """Dictionary version of :class:`RandPrimitiveDegradation` (for CLIP fine-tuning data).

    ``keys`` (default ``"image"``) is degraded; the clean float32 copy goes to ``target_key`` (``None`` to skip);
    ``degradation_key`` gets the class id (index into ``prompts.DEGRADATION_TYPES``), ``degradation_text_key``
    the prompt (or description), ``degradation_level_key`` the drawn strength. Several keys get the same draw.
    """

    def __init__(
        self,
        keys: KeysCollection = "image",
        target_key: str | None = "target",
        degradation_key: str | None = "degradation",
        degradation_text_key: str | None = "degradation_text",
        degradation_level_key: str | None = "degradation_level",
        allow_missing_keys: bool = False,
        **kwargs: Any,
    ):
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, 1.0)
        if target_key is not None and len(self.keys) > 1:
            raise ValueError("target_key can only be used with a single key.")
        self.degrader = RandPrimitiveDegradation(**kwargs)
        self.target_key = target_key
        self.degradation_key = degradation_key
        self.degradation_text_key = degradation_text_key
        self.degradation_level_key = degradation_level_key
        self.degrader.set_random_state(state=self.R)

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None):
        super().set_random_state(seed, state)
        self.degrader.set_random_state(state=self.R)
        return self

    def randomize(self, data: Any = None) -> None:
        self._do_transform = True

    def __call__(self, data: Mapping[Hashable, Any], randomize: bool = True) -> dict[Hashable, Any]:
        d = dict(data)
        state = self.R.get_state()
        done = False
        for key in self.key_iterator(d):
            self.R.set_state(state)  # same draw for every key
            img = d[key]
            out = self.degrader(img, name=source_name(img, d.get(f"{key}_meta_dict")))
            if self.target_key is not None:
                d[self.target_key] = (
                    img.detach().clone().float()
                    if isinstance(img, torch.Tensor)
                    else (np.array(img, dtype=np.float32, copy=True))
                )
            d[key] = out
            done = True
        if done:
            g = self.degrader
            for k, v in (
                (self.degradation_key, g.degradation),
                (self.degradation_text_key, g.degradation_text),
                (self.degradation_level_key, g.degradation_level),
            ):
                if k is not None:
                    d[k] = v
        return d
