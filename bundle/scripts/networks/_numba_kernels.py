"""The numba kernels of the fused CPU selective scan and of BiMamba's causal depthwise conv1d + SiLU: forward and
hand-written backward, compiled with ``cache=True`` (the torch-facing functions around them are in
``selective_scan_numba.py``). Every compiled function lives in this one file, so numba's cache, which checks only the
source file of each function, is invalidated by any change to them.

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
import math
import os

import numpy as np

__all__ = ["BLOCK_STEPS", "IMPORT_ERROR", "numba"]


try:
    import numba
    from llvmlite import ir
    from numba import njit, prange, types
    from numba.extending import intrinsic, overload
except ImportError as _e:  # numba is optional: the chunked scan is used instead
    numba = None
    IMPORT_ERROR: str | None = f"{type(_e).__name__}: {_e}"
else:
    IMPORT_ERROR = None
    from numba.core import caching as _caching

    if "NUMBA_THREADING_LAYER" not in os.environ:
        # numba's own pthread pool rather than its OpenMP layer: the latter loads the system's GNU OpenMP next to
        # torch's bundled copy (two runtimes in one process; a DDP run aborted at exit under load with it). The
        # workqueue pool is not re-entrant from several threads, which selective_scan_numba._LOCK takes care of.
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
