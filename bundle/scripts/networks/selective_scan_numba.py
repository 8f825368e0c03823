"""Fused CPU selective scan: forward and hand-written backward compiled with numba.

Same semantics as :func:`scripts.networks.selective_scan.selective_scan_sequential` (Mamba-1's S6 recurrence with
``softplus(delta + delta_bias)``, the ``D * u`` skip and the ``silu(z)`` gate), with everything around the
recurrence inside the kernel, so one call replaces the ~10^4 small torch ops of the chunked scan. Also BiMamba's
causal depthwise conv1d + SiLU, fused the same way (:func:`causal_conv1d_silu_numba`).

This module holds the torch side: the autograd Functions that call the kernels on CPU tensors, the thread plan, the
lock and :func:`warm_up`. The kernels, and how they are laid out and why, are in ``_numba_kernels.py``.
"""

from __future__ import annotations

import logging
import threading
import time

import numpy as np
import torch

from . import _numba_kernels as _k
from ._numba_kernels import BLOCK_STEPS, IMPORT_ERROR, numba
from ._scan_args import check_shapes, compute_dtype

__all__ = ["causal_conv1d_silu_numba", "numba_available", "require_numba", "selective_scan_numba", "warm_up"]

# parallel numba kernels must not be entered from two Python threads at once (e.g. a MONAI Label server)
_LOCK = threading.Lock()
logger = logging.getLogger(__name__)


def numba_available() -> bool:
    """True when numba imports (the fused scan can be compiled)."""
    return numba is not None


def require_numba(device: torch.device | str = "cpu") -> None:
    """Raise ``RuntimeError`` saying what to do when the numba kernels cannot run on ``device``."""
    if numba is None:
        raise RuntimeError(
            f"the numba scan backend needs numba, which cannot be imported ({IMPORT_ERROR}); pip install numba, "
            "or use scan_backend 'auto' or 'chunked'"
        )
    if torch.device(device).type != "cpu":
        raise RuntimeError(f"the numba scan backend runs on CPU tensors, got {device}; use 'auto' on a GPU")


class _NumbaConvSilu(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, reverse, num_threads):
        x, weight, bias = (t.detach().contiguous() for t in (x, weight, bias))
        out = torch.empty_like(x)
        threads, _ = _thread_plan(x.shape[0] * x.shape[1], num_threads)
        with _LOCK:
            numba.set_num_threads(threads)
            _run(_k._conv_silu_forward, x.numpy(), weight.numpy(), bias.numpy(), reverse, out.numpy())
        ctx.save_for_backward(x, weight, bias)
        ctx.reverse, ctx.threads = reverse, threads
        return out

    @staticmethod
    def backward(ctx, dout):
        x, weight, bias = ctx.saved_tensors
        bsz, n_e, _ = x.shape
        dx, dw, db = torch.empty_like(x), x.new_empty(bsz, n_e, weight.shape[1]), x.new_empty(bsz, n_e)
        with _LOCK:
            numba.set_num_threads(ctx.threads)
            _run(
                _k._conv_silu_backward,
                x.numpy(), weight.numpy(), bias.numpy(), ctx.reverse, _np(dout.to(x.dtype)), dx.numpy(), dw.numpy(),
                db.numpy(),
            )  # fmt: skip
        return dx, dw.sum(0), db.sum(0), None, None


def causal_conv1d_silu_numba(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, reverse: bool = False, num_threads: int | None = None
) -> torch.Tensor:
    """``silu(conv1d(x, weight, bias, padding=K - 1, groups=E)[..., :L])`` for CPU tensors, fused.

    Shapes: x (B, E, L), weight (E, K) (a depthwise ``nn.Conv1d``'s weight without its middle axis), bias (E,).
    ``reverse=True`` gives the same for the reversed sequence, reversed back (the anti-causal conv with the kernel
    flipped). Half inputs are computed in float32.
    """
    require_numba(x.device)
    ct = torch.promote_types(x.dtype, torch.float32)
    out = _NumbaConvSilu.apply(x.to(ct), weight.to(ct), bias.to(ct), bool(reverse), num_threads)
    return out.to(x.dtype)


def _thread_plan(batch: int, num_threads: int | None) -> tuple[int, int]:
    """Numba threads to use and channel groups per batch item (more groups only when threads outnumber B)."""
    threads = torch.get_num_threads() if num_threads is None else int(num_threads)
    threads = max(1, min(threads, numba.config.NUMBA_NUM_THREADS))
    groups = 1 if threads <= batch else -(-threads // batch)
    return threads, groups


def _np(x: torch.Tensor) -> np.ndarray:
    return x.detach().contiguous().numpy()


class _NumbaScan(torch.autograd.Function):
    """out = fused scan; inputs in the compute dtype, on CPU. Gradients for every tensor input."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, softplus, reverse, num_threads):
        bsz, n_e, length = u.shape
        threads, groups = _thread_plan(bsz, num_threads)
        ckpt = u.new_empty(bsz, n_e, -(-length // BLOCK_STEPS), A.shape[1])
        out, last = torch.empty_like(u), u.new_empty(bsz, n_e, A.shape[1])
        has_z = z is not None
        zz = z if has_z else u  # placeholder array of the right type, never read
        u, delta, A, B, C, D, zz, delta_bias = (t.detach().contiguous() for t in (u, delta, A, B, C, D, zz, delta_bias))
        args = [t.numpy() for t in (u, delta, A, B, C, D, zz, delta_bias)]
        with _LOCK:
            numba.set_num_threads(threads)
            _run(_k._forward_kernel, *args, softplus, has_z, reverse, groups, out.numpy(), ckpt.numpy(), last.numpy())
        ctx.save_for_backward(u, delta, A, B, C, D, zz, delta_bias, ckpt)
        ctx.flags = (softplus, has_z, reverse, threads, groups)
        return out, last

    @staticmethod
    def backward(ctx, dout, dlast):
        u, delta, A, B, C, D, zz, delta_bias, ckpt = ctx.saved_tensors
        softplus, has_z, reverse, threads, groups = ctx.flags
        bsz, n_e, length = u.shape
        n_s = A.shape[1]
        du, ddelta, dz = torch.empty_like(u), torch.empty_like(u), torch.empty_like(u) if has_z else None
        dA, dD = u.new_zeros(bsz, n_e, n_s), u.new_zeros(bsz, n_e)
        dB, dC = u.new_empty(groups, bsz, n_s, length), u.new_empty(groups, bsz, n_s, length)
        args = [t.numpy() for t in (u, delta, A, B, C, D, zz, delta_bias)]
        with _LOCK:
            numba.set_num_threads(threads)
            _run(
                _k._backward_kernel,
                *args, softplus, has_z, reverse, groups, ckpt.numpy(), _np(dout.to(u.dtype)), _np(dlast.to(u.dtype)),
                du.numpy(), ddelta.numpy(), (dz if has_z else du).numpy(), dA.numpy(), dD.numpy(),
                dB.numpy(), dC.numpy(),
            )  # fmt: skip
        dB, dC = (x[0] if groups == 1 else x.sum(0) for x in (dB, dC))
        return du, ddelta, dA.sum(0), dB, dC, dD.sum(0), dz, ddelta.sum((0, 2)), None, None, None


def selective_scan_numba(
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
    reverse: bool = False,
    num_threads: int | None = None,
):
    """Fused selective scan on CPU tensors (same arguments and result as ``selective_scan_sequential``).

    Args:
        reverse: scan from the last step to the first (equal to flipping every (B, ·, L) input and the output).
        num_threads: numba threads (over batch x channel groups); None = ``torch.get_num_threads()``.

    Raises ``RuntimeError`` when numba is missing or the tensors are not on the CPU.
    """
    require_numba(u.device)
    check_shapes(u, delta, A, B, C, D, z, delta_bias)
    ct = compute_dtype(u.dtype)
    e = u.shape[1]
    D_ = u.new_zeros(e, dtype=ct) if D is None else D.to(ct)
    bias = u.new_zeros(e, dtype=ct) if delta_bias is None else delta_bias.to(ct)
    out, last = _NumbaScan.apply(
        u.to(ct), delta.to(ct), A.to(ct), B.to(ct), C.to(ct), D_, None if z is None else z.to(ct), bias,
        bool(delta_softplus), bool(reverse), num_threads,
    )  # fmt: skip
    out = out.to(u.dtype)
    return (out, last) if return_last_state else out


def _run(kernel, *args) -> None:
    """Call a kernel; its first call in a process compiles it or loads it from the cache: log a compile."""
    if kernel.signatures:
        kernel(*args)
        return
    start = time.perf_counter()
    kernel(*args)
    seconds = time.perf_counter() - start
    if seconds > 1.0:  # a compile, not a cache load: say where the first iteration's time went
        name = kernel.py_func.__name__
        logger.info("compiled the fused CPU kernel %s in %.0f s (cached for later runs)", name, seconds)


def warm_up(dtypes: tuple[torch.dtype, ...] = (torch.float32,)) -> float:
    """Compile (or load from numba's on-disk cache) the forward and backward kernels for ``dtypes``.

    Returns the seconds taken. Without it each kernel compiles on its first call (about 13 s in all for float32 on
    the first use on a machine, logged), then loads from the cache in a fraction of a second; inference loads only
    the forward kernels. Call it to move that cost out of a timed region.
    """
    if numba is None:
        return 0.0
    start = time.perf_counter()
    # the backward kernels too, also when called from no_grad / inference_mode code
    with torch.inference_mode(False), torch.enable_grad():
        for dtype in dtypes:
            x = torch.zeros(1, 2, 3, dtype=dtype, requires_grad=True)
            A = -torch.ones(2, 2, dtype=dtype)
            bc = torch.zeros(1, 2, 3, dtype=dtype)
            y = selective_scan_numba(x, x, A, bc, bc, D=A[:, 0], z=x, delta_bias=A[:, 0], delta_softplus=True)
            y = y + causal_conv1d_silu_numba(x, A, A[:, 0]) + causal_conv1d_silu_numba(x, A, A[:, 0], reverse=True)
            y.sum().backward()
    return time.perf_counter() - start
