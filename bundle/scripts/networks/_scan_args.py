"""Argument checks shared by every selective-scan backend (``selective_scan.py``, ``selective_scan_chunked.py``,
``selective_scan_numba.py``), and the elementwise steps before and after the recurrence that the two PyTorch paths
(the reference and the chunked scan) share; the numba kernels fuse those."""

from __future__ import annotations

import torch
import torch.nn.functional as F


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


def activate_delta(delta, delta_bias, delta_softplus):
    """``softplus(delta + delta_bias)``, the bias and the softplus each optional."""
    if delta_bias is not None:
        delta = delta + delta_bias.to(delta.dtype)[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    return delta


def skip_and_gate(y, u, D, z, out_dtype):
    """y + D * u, then the optional silu(z) gate."""
    if D is not None:
        y = y + u * D.to(y.dtype)[:, None]
    if z is not None:
        y = y * F.silu(z.to(y.dtype))
    return y.to(out_dtype)
