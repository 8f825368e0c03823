"""Fused CPU selective scan: forward and hand-written backward compiled with numba.

Same semantics as :func:`scripts.networks.selective_scan.selective_scan_sequential` (Mamba-1's S6 recurrence with
``softplus(delta + delta_bias)``, the ``D * u`` skip and the ``silu(z)`` gate), with everything around the
recurrence inside the kernel, so one call replaces the ~10^4 small torch ops of the chunked scan.

How the kernels are laid out, and why:

* Work is split over (batch, channel group) tasks with ``prange``; a group is all E channels unless there are more
  threads than batch items. B and C (shared by all channels of a batch item) are read one time block at a time
  into a small (T, N) buffer, and every channel of the task is advanced through that block before the next one,
  so B/C are read from memory once per task instead of once per channel.
* The state (N values) of each channel is updated by an inner loop over N that LLVM vectorises. ``exp`` is the
  bottleneck there and numba's ``math.exp`` is a scalar libm call (no SVML with the llvmlite wheels), so float32
  uses a Cody-Waite range reduction with a degree-6 minimax polynomial and a bit-cast for 2^k (about 1 ulp, see
  the tests); float64 keeps ``math.exp`` so that the float64 path matches the reference to ~1e-15.
* ``reverse=True`` scans from the last step to the first without flipping any tensor (BiMamba's second direction).
* The forward keeps only the state at the start of every block of ``T`` steps (``(B, E, ceil(L / T), N)``, 1/T of
  the states); the backward recomputes one block's states into a (T + 1, N) buffer and runs the adjoint recurrence
  back through it. Peak memory stays near the inputs' size.
* dB and dC are sums over channels: each task accumulates them for its block in a local buffer and writes its own
  slice of a (groups, B, N, L) array; the groups are summed in torch (one group unless B < threads).
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import threading
import time

import numpy as np
import torch

from ._scan_args import check_shapes, compute_dtype

__all__ = ["causal_conv1d_silu_numba", "numba_available", "require_numba", "selective_scan_numba", "warm_up"]

try:
    import numba
    from llvmlite import ir
    from numba import njit, prange, types
    from numba.extending import intrinsic, overload
except ImportError as _e:  # numba is optional: the chunked scan is used instead
    numba = None
    _IMPORT_ERROR: str | None = f"{type(_e).__name__}: {_e}"
else:
    _IMPORT_ERROR = None
    from numba.core import caching as _caching

    if "NUMBA_THREADING_LAYER" not in os.environ:
        # numba's own pthread pool rather than its OpenMP layer: the latter loads the system's GNU OpenMP next to
        # torch's bundled copy (two runtimes in one process; a DDP run aborted at exit under load with it). The
        # workqueue pool is not re-entrant from several threads, which _LOCK below takes care of.
        numba.config.THREADING_LAYER = "workqueue"

if numba is not None:

    class _SharedCacheLocator(_caching._SourceFileBackedLocatorMixin, _caching._CacheLocator):
        """numba's on-disk cache for this file, in one folder per *content* of the file instead of per location.

        Numba's default keys the cache folder on the source file's directory, so every copy of the bundle (a MONAI
        Label app folder, an unpacked Model Zoo archive, a fresh clone) compiled the kernels again (~13 s). The
        root is ``NUMBA_CACHE_DIR`` when set, else ``~/.cache/vldun-bundle/numba``; numba still checks the
        file's content hash before it loads anything. Where the root is not writable numba's own locators apply.
        """

        def __init__(self, py_func, py_file):
            self._py_file = py_file
            self._lineno = py_func.__code__.co_firstlineno
            root = numba.config.CACHE_DIR or os.path.join(os.path.expanduser("~"), ".cache", "vldun-bundle", "numba")
            with open(py_file, "rb") as f:
                digest = hashlib.sha256(f.read()).hexdigest()[:16]
            self._cache_path = os.path.join(root, f"selective_scan_numba-{digest}")

        def get_cache_path(self):
            return self._cache_path

        @classmethod
        def from_function(cls, py_func, py_file):
            if os.path.abspath(py_file) != os.path.abspath(__file__):
                return None  # some other module's function: not ours to place
            return super().from_function(py_func, py_file)

    _caching.CacheImpl._locator_classes.insert(0, _SharedCacheLocator)

# steps per block (see the module docstring): a block's (T + 1, N) states, decays and B/C rows stay in L1
BLOCK_STEPS = 128
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
            f"the numba scan backend needs numba, which cannot be imported ({_IMPORT_ERROR}); pip install numba, "
            "or use scan_backend 'auto' or 'chunked'"
        )
    if torch.device(device).type != "cpu":
        raise RuntimeError(f"the numba scan backend runs on CPU tensors, got {device}; use 'auto' on a GPU")


# ----------------------------------------------------------------------------------------------------------------
# scalar maths: exact in float64, vectorisable polynomials in float32
# ----------------------------------------------------------------------------------------------------------------
def _exp_nonpos(x):
    """exp(x) for x <= 0 (its float32 kernel version is the polynomial below)."""
    return math.exp(x)


def _log1p_unit(v):
    """log(1 + v) for 0 <= v <= 1."""
    return math.log1p(v)


def _softplus(x):
    """torch's softplus (threshold 20): x for x > 20, else log(1 + exp(x))."""
    return x if x > 20.0 else max(x, 0.0) + _log1p_unit(_exp_nonpos(-abs(x)))


def _sigmoid(x):
    e = _exp_nonpos(-abs(x))
    return 1.0 / (1.0 + e) if x >= 0 else e / (1.0 + e)


if numba is not None:
    _F32 = np.float32
    # no 'nnan'/'ninf': NaN and Inf must propagate as in torch; reassociation lets LLVM vectorise the sums over N
    _FASTMATH = {"reassoc", "contract", "nsz", "arcp"}
    # Cody-Waite split of ln 2 and the minimax polynomial of exp on [-ln2/2, ln2/2] (the classic single-precision
    # coefficients); about 1 ulp over the whole range
    _EXP_LO, _LOG2E = _F32(-87.33654), _F32(1.44269504088896341)
    _LN2_HI, _LN2_LO = _F32(0.693359375), _F32(-2.12194440e-4)
    _P0, _P1, _P2 = _F32(1.9875691500e-4), _F32(1.3981999507e-3), _F32(8.3334519073e-3)
    _P3, _P4, _P5 = _F32(4.1665795894e-2), _F32(1.6666665459e-1), _F32(5.0000001201e-1)
    _HALF, _ONE, _TWO, _ZERO = _F32(0.5), _F32(1.0), _F32(2.0), _F32(0.0)
    # log1p(v) = 2 atanh(s), s = v / (2 + v) in [0, 1/3]: the odd series up to s^17 is exact to ~1e-10 relative
    _ATANH = tuple(_F32(1.0 / k) for k in (3, 5, 7, 9, 11, 13, 15, 17))

    @intrinsic
    def _f32_from_bits(typingctx, bits):
        if bits != types.int32:
            return None

        def codegen(context, builder, signature, args):
            return builder.bitcast(args[0], ir.FloatType())

        return types.float32(types.int32), codegen

    # no 'reassoc' here: it would fold the two-constant Cody-Waite reduction back into one rounded ln 2
    @overload(_exp_nonpos, jit_options={"fastmath": {"contract", "nsz", "arcp"}})
    def _exp_nonpos_ov(x):
        if x == types.float32:

            def impl(x):
                xc = max(x, _EXP_LO)
                k = np.floor(xc * _LOG2E + _HALF)
                r = xc - k * _LN2_HI - k * _LN2_LO
                p = ((((_P0 * r + _P1) * r + _P2) * r + _P3) * r + _P4) * r + _P5
                p = p * r * r + r + _ONE
                scale = _f32_from_bits(np.int32((np.int64(k) + 127) << 23))
                return p * scale if x >= _EXP_LO else _ZERO

            return impl
        return lambda x: math.exp(x)

    @overload(_log1p_unit, jit_options={"fastmath": _FASTMATH})
    def _log1p_unit_ov(v):
        if v == types.float32:
            c3, c5, c7, c9, c11, c13, c15, c17 = _ATANH

            def impl(v):
                s = v / (_TWO + v)
                s2 = s * s
                p = c17
                for c in (c15, c13, c11, c9, c7, c5, c3):
                    p = p * s2 + c
                return _TWO * (s + s * s2 * p)

            return impl
        return lambda v: math.log1p(v)

    @overload(_softplus, jit_options={"fastmath": _FASTMATH})
    def _softplus_ov(x):
        zero = _ZERO if x == types.float32 else 0.0

        def impl(x):
            return x if x > 20.0 else max(x, zero) + _log1p_unit(_exp_nonpos(-abs(x)))

        return impl

    @overload(_sigmoid, jit_options={"fastmath": _FASTMATH})
    def _sigmoid_ov(x):
        one = _ONE if x == types.float32 else 1.0

        def impl(x):
            e = _exp_nonpos(-abs(x))
            return one / (one + e) if x >= 0 else e / (one + e)

        return impl

    @njit(cache=True, fastmath=_FASTMATH)
    def _gather(dst, src, t0, step, nt):
        for j in range(nt):
            dst[j] = src[t0 + step * j]

    @njit(cache=True, fastmath=_FASTMATH)
    def _scatter(dst, src, t0, step, nt):
        for j in range(nt):
            dst[t0 + step * j] = src[j]

    @njit(cache=True, fastmath=_FASTMATH)
    def _load_block(buf, mat, t0, step, nt):
        """buf[j, n] = mat[n, t0 + step * j]: one block of B or C, in scan order and (T, N) layout."""
        for n in range(mat.shape[0]):
            for j in range(nt):
                buf[j, n] = mat[n, t0 + step * j]

    @njit(cache=True, fastmath=_FASTMATH)
    def _block_delta(dt, sg, raw, bias, softplus, nt):
        """dt = softplus(raw + bias) (or raw + bias) in place of raw; sg = its derivative (when sg is not None)."""
        for j in range(nt):
            x = raw[j] + bias
            dt[j] = _softplus(x) if softplus else x
            if sg is not None:
                sg[j] = _sigmoid(x)

    @njit(cache=True)
    def _task(task, groups, n_e):
        """Task -> (batch item, channel group, first channel, end channel)."""
        b, g = task // groups, task % groups
        gsize = (n_e + groups - 1) // groups
        return b, g, g * gsize, min(n_e, (g + 1) * gsize)

    @njit(cache=True)
    def _window(k, blk, length, reverse):
        """Block k in scan order -> (steps in it, time index of its first step, +1 or -1 per step)."""
        s0 = k * blk
        return min(blk, length - s0), (length - 1 - s0 if reverse else s0), (-1 if reverse else 1)

    @njit(parallel=True, cache=True, fastmath=_FASTMATH)
    def _forward_kernel(u, delta, A, Bm, Cm, D, z, bias, softplus, has_z, reverse, groups, out, ckpt, last):
        bsz, n_e, length = u.shape
        n_s = A.shape[1]
        n_blk, blk = ckpt.shape[2], BLOCK_STEPS
        for task in prange(bsz * groups):
            b, g, e0, e1 = _task(task, groups, n_e)
            hs = np.zeros((max(e1 - e0, 0), n_s), dtype=u.dtype)
            bt, ct = np.empty((blk, n_s), dtype=u.dtype), np.empty((blk, n_s), dtype=u.dtype)
            ub, dt = np.empty(blk, u.dtype), np.empty(blk, u.dtype)
            yb, zb = np.empty(blk, u.dtype), np.empty(blk, u.dtype)
            for k in range(n_blk):
                nt, t0, step = _window(k, blk, length, reverse)
                _load_block(bt, Bm[b], t0, step, nt)
                _load_block(ct, Cm[b], t0, step, nt)
                for e in range(e0, e1):
                    h = hs[e - e0]
                    ckpt[b, e, k, :] = h
                    _gather(ub, u[b, e], t0, step, nt)
                    _gather(dt, delta[b, e], t0, step, nt)
                    _block_delta(dt, None, dt, bias[e], softplus, nt)
                    a_row = A[e]
                    for j in range(nt):
                        dtj = dt[j]
                        dtu = dtj * ub[j]
                        y = ub[j] * D[e]
                        for n in range(n_s):
                            hn = _exp_nonpos(dtj * a_row[n]) * h[n] + dtu * bt[j, n]
                            h[n] = hn
                            y += hn * ct[j, n]
                        yb[j] = y
                    if has_z:
                        _gather(zb, z[b, e], t0, step, nt)
                        for j in range(nt):
                            yb[j] = yb[j] * zb[j] * _sigmoid(zb[j])
                    _scatter(out[b, e], yb, t0, step, nt)
            last[b, e0:e1, :] = hs

    @njit(parallel=True, cache=True, fastmath=_FASTMATH)
    def _backward_kernel(
        u, delta, A, Bm, Cm, D, z, bias, softplus, has_z, reverse, groups, ckpt, dout, dlast,
        du, ddelta, dz, dA, dD, dB, dC,
    ):  # fmt: skip
        bsz, n_e, length = u.shape
        n_s = A.shape[1]
        n_blk, blk = ckpt.shape[2], BLOCK_STEPS
        for task in prange(bsz * groups):
            b, g, e0, e1 = _task(task, groups, n_e)
            lam = dlast[b, e0:e1, :].copy()  # adjoint of each channel's state after the current block
            bt, ct = np.empty((blk, n_s), dtype=u.dtype), np.empty((blk, n_s), dtype=u.dtype)
            dbt, dct = np.empty((blk, n_s), dtype=u.dtype), np.empty((blk, n_s), dtype=u.dtype)
            hbuf, abuf = np.empty((blk + 1, n_s), dtype=u.dtype), np.empty((blk, n_s), dtype=u.dtype)
            ub, dt, sg = np.empty(blk, u.dtype), np.empty(blk, u.dtype), np.empty(blk, u.dtype)
            zb, gy, yb = np.empty(blk, u.dtype), np.empty(blk, u.dtype), np.empty(blk, u.dtype)
            for k in range(n_blk - 1, -1, -1):
                nt, t0, step = _window(k, blk, length, reverse)
                _load_block(bt, Bm[b], t0, step, nt)
                _load_block(ct, Cm[b], t0, step, nt)
                dbt[:nt] = 0
                dct[:nt] = 0
                for e in range(e0, e1):
                    a_row, d_e = A[e], D[e]
                    _gather(ub, u[b, e], t0, step, nt)
                    _gather(dt, delta[b, e], t0, step, nt)
                    _block_delta(dt, sg, dt, bias[e], softplus, nt)
                    # recompute the block's states and decays from its saved start state
                    hbuf[0, :] = ckpt[b, e, k, :]
                    for j in range(nt):
                        dtj = dt[j]
                        dtu = dtj * ub[j]
                        y = ub[j] * d_e
                        for n in range(n_s):
                            a = _exp_nonpos(dtj * a_row[n])
                            hn = a * hbuf[j, n] + dtu * bt[j, n]
                            abuf[j, n] = a
                            hbuf[j + 1, n] = hn
                            y += hn * ct[j, n]
                        yb[j] = y
                    # gate: out = y * silu(z); gy = d out / d y, and dz
                    _gather(gy, dout[b, e], t0, step, nt)
                    if has_z:
                        _gather(zb, z[b, e], t0, step, nt)
                        for j in range(nt):
                            zj = zb[j]
                            s = _sigmoid(zj)
                            go = gy[j]
                            gy[j] = go * zj * s
                            zb[j] = go * yb[j] * s * (1 + zj * (1 - s))
                        _scatter(dz[b, e], zb, t0, step, nt)
                    # adjoint recurrence, last step of the block first
                    lam_e = lam[e - e0]
                    da_acc = dA[b, e]
                    dd = 0.0
                    for j in range(nt - 1, -1, -1):
                        gj, dtj, uj = gy[j], dt[j], ub[j]
                        dd += gj * uj
                        s_b = gj * 0
                        s_a = gj * 0
                        for n in range(n_s):
                            gn = lam_e[n] + gj * ct[j, n]
                            dct[j, n] += gj * hbuf[j + 1, n]
                            dbt[j, n] += gn * dtj * uj
                            s_b += gn * bt[j, n]
                            da = gn * hbuf[j, n] * abuf[j, n]
                            s_a += da * a_row[n]
                            da_acc[n] += da * dtj
                            lam_e[n] = gn * abuf[j, n]
                        ub[j] = s_b * dtj + gj * d_e  # du (u no longer needed)
                        ddt = s_a + s_b * uj
                        yb[j] = ddt * sg[j] if softplus else ddt  # d raw delta
                    dD[b, e] += dd
                    _scatter(du[b, e], ub, t0, step, nt)
                    _scatter(ddelta[b, e], yb, t0, step, nt)
                for n in range(n_s):
                    for j in range(nt):
                        dB[g, b, n, t0 + step * j] = dbt[j, n]
                        dC[g, b, n, t0 + step * j] = dct[j, n]


if numba is not None:

    @njit(cache=True, fastmath=_FASTMATH)
    def _conv_row(acc, xr, w_row, bias, reverse):
        """acc = the depthwise conv1d of one row (pre-activation): causal, or anti-causal with the kernel flipped."""
        k_len, length = w_row.shape[0], xr.shape[0]
        acc[:] = bias
        for k in range(k_len):
            sh, wk = k_len - 1 - k, w_row[k]
            if reverse:
                for t in range(length - sh):
                    acc[t] += wk * xr[t + sh]
            else:
                for t in range(sh, length):
                    acc[t] += wk * xr[t - sh]

    @njit(parallel=True, cache=True, fastmath=_FASTMATH)
    def _conv_silu_forward(x, w, bias, reverse, out):
        """out = silu(depthwise causal conv1d(x)) per (batch, channel) row; reverse: anti-causal, kernel flipped."""
        bsz, n_e, length = x.shape
        for task in prange(bsz * n_e):
            b, e = task // n_e, task % n_e
            acc = np.empty(length, x.dtype)
            _conv_row(acc, x[b, e], w[e], bias[e], reverse)
            o = out[b, e]
            for t in range(length):
                o[t] = acc[t] * _sigmoid(acc[t])

    @njit(parallel=True, cache=True, fastmath=_FASTMATH)
    def _conv_silu_backward(x, w, bias, reverse, dout, dx, dw, dbias):
        """Gradients of :func:`_conv_silu_forward`; dw (B, E, K) and dbias (B, E) are summed over B by the caller."""
        bsz, n_e, length = x.shape
        k_len = w.shape[1]
        for task in prange(bsz * n_e):
            b, e = task // n_e, task % n_e
            xr, acc, g = x[b, e], np.empty(length, x.dtype), np.empty(length, x.dtype)
            _conv_row(acc, xr, w[e], bias[e], reverse)
            go, gb = dout[b, e], acc[0] * 0
            for t in range(length):
                a = acc[t]
                sg = _sigmoid(a)
                g[t] = go[t] * sg * (1 + a * (1 - sg))
                gb += g[t]
            dbias[b, e] = gb
            dxr = dx[b, e]
            dxr[:] = 0
            for k in range(k_len):
                sh, wk, gw = k_len - 1 - k, w[e, k], acc[0] * 0
                if reverse:
                    for t in range(length - sh):
                        gw += g[t] * xr[t + sh]
                        dxr[t + sh] += wk * g[t]
                else:
                    for t in range(sh, length):
                        gw += g[t] * xr[t - sh]
                        dxr[t - sh] += wk * g[t]
                dw[b, e, k] = gw


class _NumbaConvSilu(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, reverse, num_threads):
        x, weight, bias = (t.detach().contiguous() for t in (x, weight, bias))
        out = torch.empty_like(x)
        threads, _ = _thread_plan(x.shape[0] * x.shape[1], num_threads)
        with _LOCK:
            numba.set_num_threads(threads)
            _run(_conv_silu_forward, x.numpy(), weight.numpy(), bias.numpy(), reverse, out.numpy())
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
                _conv_silu_backward,
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
            _run(_forward_kernel, *args, softplus, has_z, reverse, groups, out.numpy(), ckpt.numpy(), last.numpy())
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
                _backward_kernel,
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
