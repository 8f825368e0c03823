"""Selective scan (the S6 recurrence of Mamba-1) with a fast, memory-lean pure-PyTorch path.

Semantics are those of ``mamba_ssm.ops.selective_scan_interface.selective_scan_ref``::

    delta = softplus(delta + delta_bias)              (bias and softplus optional)
    h_t   = exp(delta_t * A) * h_{t-1} + delta_t * B_t * u_t      h: (B, E, N), h_{-1} = 0
    y_t   = C_t . h_t + D * u_t
    out   = y * silu(z)                                (z optional)

Shapes: ``u, delta, z``: (B, E, L); ``A``: (E, N) (real, normally negative); ``B, C``: (B, N, L) (input dependent,
shared by all E channels); ``D, delta_bias``: (E,).

Three functions:

* :func:`selective_scan_sequential` - the readable reference, a loop over time (tests and benchmarks only).
* :func:`selective_scan_chunked` (``selective_scan_chunked.py``) - the pure-PyTorch CPU path: a two-level scan over
  chunks of ``chunk_size`` steps and groups of ``group_chunks`` chunks, stable for any ``delta * A <= 0``, with a
  hand-written backward that never materialises (B, L, E, N); one intra-op thread by default.
* :func:`selective_scan` - the dispatcher over the backends: ``"numba"`` (the fused CPU kernel of
  :mod:`scripts.networks.selective_scan_numba`), ``"chunked"``, ``"mamba_ssm"`` (its CUDA kernel) and
  ``"reference"``. ``"auto"`` picks mamba_ssm for CUDA tensors when it imports, numba for CPU tensors when it
  imports, the chunked scan otherwise. ``reverse=True`` scans from the last step to the first: natively in numba,
  by flipping inputs and output for the others.

Example::

    >>> u = torch.randn(1, 8, 100); delta = torch.rand(1, 8, 100); A = -torch.rand(8, 4)
    >>> B = torch.randn(1, 4, 100); C = torch.randn(1, 4, 100)
    >>> y = selective_scan(u, delta, A, B, C)          # (1, 8, 100)
"""

from __future__ import annotations

import torch

from ._scan_args import activate_delta, check_shapes, compute_dtype, skip_and_gate
from .selective_scan_chunked import (
    DEFAULT_CHUNK_SIZE,
    DEFAULT_GROUP_CHUNKS,
    DEFAULT_NUM_THREADS,
    selective_scan_chunked,
)
from .selective_scan_numba import numba_available, require_numba, selective_scan_numba

__all__ = [
    "SCAN_BACKENDS",
    "DEFAULT_CHUNK_SIZE",
    "DEFAULT_GROUP_CHUNKS",
    "DEFAULT_NUM_THREADS",
    "canonical_backend",
    "mamba_ssm_available",
    "resolve_backend",
    "selective_scan",
    "selective_scan_chunked",
    "selective_scan_sequential",
]

SCAN_BACKENDS = ("auto", "numba", "chunked", "mamba_ssm", "reference")
# configs written before the numba backend existed say "torch" for the chunked scan
_BACKEND_ALIASES = {"torch": "chunked"}
_MAMBA_FN = None
_MAMBA_IMPORT_ERROR: str | None = None
_MAMBA_IMPORT_TRIED = False


def _mamba_selective_scan_fn():
    """Import mamba_ssm's CUDA ``selective_scan_fn`` once; None (and the reason remembered) if it cannot be."""
    global _MAMBA_FN, _MAMBA_IMPORT_ERROR, _MAMBA_IMPORT_TRIED
    if not _MAMBA_IMPORT_TRIED:
        _MAMBA_IMPORT_TRIED = True
        try:
            from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
        except (ImportError, OSError, RuntimeError) as e:  # not installed, or its CUDA extension / triton is missing
            _MAMBA_IMPORT_ERROR = f"{type(e).__name__}: {e}"
        else:
            _MAMBA_FN = selective_scan_fn
    return _MAMBA_FN


def mamba_ssm_available() -> bool:
    """True when ``mamba_ssm.ops.selective_scan_interface.selective_scan_fn`` can be imported."""
    return _mamba_selective_scan_fn() is not None


# ----------------------------------------------------------------------------------------------------------------
# reference: a plain loop over time
# ----------------------------------------------------------------------------------------------------------------
def selective_scan_sequential(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = False,
    return_last_state: bool = False,
):
    """Readable reference: one recurrence step per time step (``unbind``/``stack``, so its backward stays O(L)).

    Returns ``out`` (B, E, L), or ``(out, last_state)`` with ``last_state`` (B, E, N) if ``return_last_state``.
    """
    check_shapes(u, delta, A, B, C, D, z, delta_bias)
    ct = compute_dtype(u.dtype)
    uc, A, B, C = u.to(ct), A.to(ct), B.to(ct), C.to(ct)
    delta = activate_delta(delta.to(ct), delta_bias, delta_softplus)
    h = uc.new_zeros(uc.shape[0], uc.shape[1], A.shape[1])  # (B, E, N)
    ys = []
    for d_t, u_t, b_t, c_t in zip(delta.unbind(-1), uc.unbind(-1), B.unbind(-1), C.unbind(-1)):
        # d_t, u_t: (B, E); b_t, c_t: (B, N)
        h = torch.exp(d_t[:, :, None] * A) * h + (d_t * u_t)[:, :, None] * b_t[:, None, :]
        ys.append((h * c_t[:, None, :]).sum(-1))
    y = torch.stack(ys, dim=-1)
    out = skip_and_gate(y, uc, D, z, u.dtype)
    return (out, h) if return_last_state else out


# ----------------------------------------------------------------------------------------------------------------
# dispatcher
# ----------------------------------------------------------------------------------------------------------------
def canonical_backend(backend: str) -> str:
    """``backend`` checked against :data:`SCAN_BACKENDS` (old names mapped to new ones)."""
    name = _BACKEND_ALIASES.get(backend, backend)
    if name not in SCAN_BACKENDS:
        raise ValueError(f"scan backend must be one of {SCAN_BACKENDS}, got {backend!r}")
    return name


def resolve_backend(backend: str, device: torch.device | str = "cpu") -> str:
    """The concrete backend ``selective_scan`` uses for ``backend`` on ``device`` (checks availability).

    ``"auto"``: mamba_ssm for CUDA when it imports; numba for CPU when it imports and no ``torch.compile`` /
    ``torch.export`` trace is running; the chunked scan otherwise.

    Raises ``ValueError`` for an unknown name and ``RuntimeError`` when the named backend cannot run there.
    """
    backend = canonical_backend(backend)
    device = torch.device(device)
    if backend == "auto":
        if device.type == "cuda" and _mamba_selective_scan_fn() is not None:
            return "mamba_ssm"
        # numba kernels are opaque to torch.compile / torch.export tracing: traced graphs get the chunked scan
        if device.type == "cpu" and numba_available() and not torch.compiler.is_compiling():
            return "numba"
        return "chunked"
    if backend == "mamba_ssm":
        if _mamba_selective_scan_fn() is None:
            raise RuntimeError(
                "scan backend 'mamba_ssm' was requested but mamba_ssm's selective_scan_fn cannot be imported "
                f"({_MAMBA_IMPORT_ERROR}); install mamba-ssm on a CUDA machine or use 'auto'"
            )
        if device.type != "cuda":
            raise RuntimeError("scan backend 'mamba_ssm' needs CUDA tensors; use 'auto', 'numba' or 'chunked' on CPU")
    if backend == "numba":
        require_numba(device)
    return backend


def selective_scan(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = False,
    return_last_state: bool = False,
    backend: str = "auto",
    reverse: bool = False,
    chunk_size: int | None = None,
    group_chunks: int | None = None,
    num_threads: int | None = None,
):
    """Selective scan with ``selective_scan_ref`` semantics, on the best available backend.

    Args:
        backend: ``"auto"``, ``"numba"``, ``"chunked"``, ``"mamba_ssm"`` or ``"reference"`` (see
            :func:`resolve_backend`; ``"torch"`` is the old name of ``"chunked"``).
        reverse: scan from the last step to the first, i.e. ``flip(scan(flip(u), flip(delta), A, flip(B), flip(C),
            D, flip(z)))`` along L; the last state is then the state after the first step.
        chunk_size, group_chunks: tuning of the chunked scan (None: module defaults).
        num_threads: CPU threads inside the scan; None = each backend's default (chunked: ``DEFAULT_NUM_THREADS``
            torch intra-op threads; numba: as many workers as torch's intra-op threads). Ignored by mamba_ssm.
    """
    name = resolve_backend(backend, u.device)
    if name == "numba":
        return selective_scan_numba(
            u, delta, A, B, C, D=D, z=z, delta_bias=delta_bias, delta_softplus=delta_softplus,
            return_last_state=return_last_state, reverse=reverse, num_threads=num_threads,
        )  # fmt: skip
    if reverse:  # the other backends scan forwards only
        u, delta, B, C = (x.flip(-1) for x in (u, delta, B, C))
        z = None if z is None else z.flip(-1)
    kwargs = {"D": D, "z": z, "delta_bias": delta_bias, "delta_softplus": delta_softplus}
    if name == "mamba_ssm":
        check_shapes(u, delta, A, B, C, D, z, delta_bias)
        result = _mamba_selective_scan_fn()(
            u.contiguous(),
            delta.contiguous(),
            A.contiguous(),
            B.contiguous(),
            C.contiguous(),
            D=None if D is None else D.float(),
            z=None if z is None else z.contiguous(),
            delta_bias=None if delta_bias is None else delta_bias.float(),
            delta_softplus=delta_softplus,
            return_last_state=return_last_state,
        )
    elif name == "reference":
        result = selective_scan_sequential(u, delta, A, B, C, return_last_state=return_last_state, **kwargs)
    else:
        result = selective_scan_chunked(
            u,
            delta,
            A,
            B,
            C,
            return_last_state=return_last_state,
            chunk_size=DEFAULT_CHUNK_SIZE if chunk_size is None else chunk_size,
            group_chunks=DEFAULT_GROUP_CHUNKS if group_chunks is None else group_chunks,
            num_threads=DEFAULT_NUM_THREADS if num_threads is None else num_threads,
            **kwargs,
        )
    if not reverse:
        return result
    if return_last_state:
        return result[0].flip(-1), result[1]
    return result.flip(-1)
