"""k-space sampling masks for one 2-D plane: Cartesian lines (MRI) and radial spokes (sparse-view CT).

- :class:`CartesianKspaceMask`: MONAI's ``RandomKspaceMask`` (fastMRI ``RandomMaskFunc`` semantics) or
  ``EquispacedKspaceMask``: a centre band of ``round(N * cf)`` lines starting at ``(N - band + 1) // 2`` is always
  sampled, every other line is kept with probability ``(N / acc - band) / (N - band)`` (random) or every
  ``adjusted_acc`` from a random offset (equispaced); one ``(cf, acc)`` pair is drawn uniformly per sample.
- :class:`RadialKspaceMask`: ``n`` full-diameter spokes through the k-space centre (Fourier-slice theorem: ``n``
  spokes ≈ ``n`` parallel-beam views), uniform or golden-angle ordering.

Both draw all randomness from their ``self.R`` and share one interface used by
:class:`~scripts.transforms.kspace.KspaceUndersample`: ``draw(shape, params=None) -> (bool mask, params)``
(pass ``params`` back to keep the acceleration / spoke count for further slices), ``describe(params)`` (the
degradation text) and ``level(params)`` (acceleration or spoke count). See ``docs/kspace.md``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.apps.reconstruction.transforms.array import EquispacedKspaceMask, RandomKspaceMask
from monai.transforms import Randomizable

__all__ = ["GOLDEN_ANGLE_DEG", "CartesianKspaceMask", "RadialKspaceMask"]

#: Golden angle for full-diameter spokes, 180° / φ ≈ 111.246° (Winkelmann et al. 2007).
GOLDEN_ANGLE_DEG: float = 180.0 * (math.sqrt(5.0) - 1.0) / 2.0


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
