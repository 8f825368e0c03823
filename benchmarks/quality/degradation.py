"""K-space degradations of the quality benchmark: the ``Degradation`` setting (``cartesian:ACC:CF`` or
``radial:SPOKES``, parsed by ``parse_degradation``) built on the bundle's ``KspaceUndersample``, the protocol's
shared evaluation settings (``SETTINGS``), the default degradation per modality (``DEFAULT_DEGRADATION``), and
``make_test_inputs``, which degrades each test slice with the fixed mask seeded by (global seed, dataset, index).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["DEFAULT_DEGRADATION", "SETTINGS", "Degradation", "make_test_inputs", "parse_degradation"]

#: shared evaluation settings of the protocol: folder under --data-root, degradation
SETTINGS: dict[str, tuple[str, str]] = {
    "acdc_8x": ("acdc", "cartesian:8:0.04"),
    "acdc_4x": ("acdc", "cartesian:4:0.08"),
    "covid_60": ("covid_ct_medseg_infnet", "radial:60"),
}
DEFAULT_DEGRADATION = {"MRI": "cartesian:8:0.04", "CT": "radial:60"}


@dataclass(frozen=True)
class Degradation:
    kind: str  # "cartesian" | "radial"
    acceleration: float = 8.0
    center_fraction: float = 0.04
    spokes: int = 60

    def spec(self) -> str:
        if self.kind == "cartesian":
            return f"cartesian:{self.acceleration:g}:{self.center_fraction:g}"
        return f"radial:{self.spokes}"

    def describe(self) -> str:
        if self.kind == "cartesian":
            return (
                f"random Cartesian columns, {self.acceleration:g}x, centre fraction {self.center_fraction:g} "
                "(fastMRI/MONAI RandomKspaceMask rule)"
            )
        return f"radial, {self.spokes} spokes through the k-space centre"

    def transform(self):
        """A ``scripts.transforms.kspace.KspaceUndersample`` for this setting (the bundle's own transform)."""
        from scripts.transforms.kspace import KspaceUndersample

        if self.kind == "cartesian":
            return KspaceUndersample(
                mask_type="cartesian",
                center_fractions=[self.center_fraction],
                accelerations=[self.acceleration],
                phase_encode_axis=-1,
            )
        return KspaceUndersample(mask_type="radial", num_spokes=[self.spokes])


def parse_degradation(spec: str) -> Degradation:
    """``cartesian:ACC:CF`` (e.g. ``cartesian:8:0.04``) or ``radial:SPOKES`` (e.g. ``radial:60``)."""
    parts = spec.strip().lower().split(":")
    try:
        if parts[0] == "cartesian" and len(parts) == 3:
            return Degradation("cartesian", acceleration=float(parts[1]), center_fraction=float(parts[2]))
        if parts[0] == "radial" and len(parts) == 2:
            return Degradation("radial", spokes=int(parts[1]))
    except ValueError:
        pass
    raise ValueError(f"bad degradation {spec!r}: use cartesian:ACC:CF (e.g. cartesian:8:0.04) or radial:SPOKES.")


def make_test_inputs(
    clean: np.ndarray, deg: Degradation, global_seed: int, dataset: str, measurements: bool = False
) -> np.ndarray | tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Degraded test inputs: slice ``i`` gets the fixed mask drawn from ``sample_seed(global_seed, dataset, i)``.

    With ``measurements``, also the measured k-space (N, S, S complex64) and masks (N, S, S float32) of the same
    draws, for the known-operator methods."""
    from scripts.transforms.kspace import sample_seed

    us = deg.transform()
    out = np.empty_like(clean, dtype=np.float32)
    kspace = np.empty(clean.shape, dtype=np.complex64)
    masks = np.empty_like(clean, dtype=np.float32)
    for i in range(clean.shape[0]):
        y = us(torch.as_tensor(clean[i][None]), seed=sample_seed(global_seed, dataset, i))
        out[i] = np.asarray(y[0], dtype=np.float32)
        kspace[i], masks[i] = np.asarray(us.kspace[0]), np.asarray(us.mask[0])
    return (out, kspace, masks) if measurements else out
