"""Argument checks shared by every selective-scan backend (``selective_scan.py``, ``selective_scan_numba.py``)."""

from __future__ import annotations

import torch


def check_shapes(u, delta, A, B, C, D, z, delta_bias) -> None:
    if u.dim() != 3 or delta.shape != u.shape:
        raise ValueError(f"u and delta must both be (B, E, L), got {tuple(u.shape)} and {tuple(delta.shape)}")
    b, e, length = u.shape
    if A.dim() != 2 or A.shape[0] != e:
        raise ValueError(f"A must be (E, N) = ({e}, N), got {tuple(A.shape)}")
    n = A.shape[1]
    for name, t in (("B", B), ("C", C)):
        if tuple(t.shape) != (b, n, length):
            raise ValueError(f"{name} must be (B, N, L) = {(b, n, length)}, got {tuple(t.shape)}")
    for name, t in (("D", D), ("delta_bias", delta_bias)):
        if t is not None and tuple(t.shape) != (e,):
            raise ValueError(f"{name} must be (E,) = ({e},), got {tuple(t.shape)}")
    if z is not None and z.shape != u.shape:
        raise ValueError(f"z must be (B, E, L) like u, got {tuple(z.shape)}")


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    # half precision inputs are scanned in float32 (as mamba_ssm does); float64 stays float64
    return torch.promote_types(dtype, torch.float32)
