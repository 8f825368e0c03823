"""The chunked selective scan: the CPU path in pure PyTorch, with a hand-written backward.

Same arguments and result as :func:`scripts.networks.selective_scan.selective_scan_sequential` (the reference; see
``selective_scan.py`` for the recurrence and the shapes).

The sequence is cut into chunks of ``chunk_size`` steps and the chunks into groups of ``group_chunks`` chunks. Within
a group the recurrence is run for all chunks at once (a loop over the T steps of a chunk, vectorised over chunks)
from a zero state, giving each chunk's end state and total decay; the chunk-start states are then carried across the
chunks of the group, and a second pass over the T steps computes every state from its chunk's true start state. Only
decays ``exp(delta * A) <= 1`` and their products are ever formed (never the exponential of a positive number), so it
is stable for any ``delta * A <= 0``. Groups are processed one after the other; only one group's (T, B, chunks, E, N)
tensors exist at a time, and only the group-start states (B, E, N) are kept for the backward pass. The backward pass
is hand written (a custom :class:`torch.autograd.Function`): it recomputes each group's states from its saved start
state and runs the adjoint recurrence (the same two-level scan in reverse). So (B, L, E, N) is never materialised for
the whole sequence. On CPU it runs with one intra-op thread by default (``num_threads``; see ``DEFAULT_NUM_THREADS``
for the measurements behind that choice). Under ``torch.export`` one ``torch._higher_order_ops.scan`` over the chunks
replaces the group loop (inference only).
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

from ._scan_args import activate_delta, check_shapes, compute_dtype, skip_and_gate

__all__ = ["DEFAULT_CHUNK_SIZE", "DEFAULT_GROUP_CHUNKS", "DEFAULT_NUM_THREADS", "selective_scan_chunked"]

# chunk of 8 steps, groups of 16 chunks (128 steps; a group's (8, B, 16, E, N) tensors stay in L2 for E = 96, N = 16):
# best or tied-best in CPU time (1 thread) and interleaved wall time (2 threads) over chunk 4..64 x group 4..32 on
# the shared 2-core CPU, L = 16k..64k (benchmarks/bench_scan.py --tune prints such a grid)
DEFAULT_CHUNK_SIZE = 8
DEFAULT_GROUP_CHUNKS = 16

# Intra-op threads used inside the chunked scan on CPU. Its hundreds of medium-size ops per 1k steps gain little
# from a second thread, and on a shared, oversubscribed CPU every OpenMP parallel region can stall on a descheduled
# worker, while idle workers that spin steal the CPU from the main thread. Measured on the shared 2-core machine
# (L = 16,384, fwd + bwd, OMP_WAIT_POLICY unset): 8.7 s with 2 threads vs 1.2 s with 1 (mambapy: 4.2 vs 3.1 s);
# with OMP_WAIT_POLICY=PASSIVE both thread counts took ~1.6 s. None = keep torch's setting.
DEFAULT_NUM_THREADS: int | None = 1


@contextlib.contextmanager
def _intra_op_threads(n: int | None, device: torch.device):
    """Temporarily set torch's intra-op thread count (CPU only; restored afterwards)."""
    old = torch.get_num_threads()
    if n is None or device.type != "cpu" or n == old:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _to_tbc(x: torch.Tensor, t: int) -> torch.Tensor:
    """(B, K, nc * t) -> (t, B, nc, K) view: step-in-chunk first so that the loop over steps slices contiguously."""
    b, k, g = x.shape
    return x.view(b, k, g // t, t).permute(3, 0, 2, 1)


def _from_tbc(x: torch.Tensor) -> torch.Tensor:
    """(t, B, nc, K) -> (B, K, nc * t)."""
    t, b, nc, k = x.shape
    return x.permute(1, 3, 2, 0).reshape(b, k, nc * t)


def _decays_and_inputs(u, delta, A, B, t):
    """Group tensors in the (t, B, nc, E, N) layout: decays a = exp(delta A) in [0, 1] and inputs X = delta u B."""
    d = _to_tbc(delta, t)  # (t, B, nc, E)
    a = (d[..., None] * A).exp_()  # exp of a non-positive number only
    x = (d * _to_tbc(u, t))[..., None] * _to_tbc(B, t)[..., None, :]
    return a, x


def _group_states(a: torch.Tensor, x: torch.Tensor, h0: torch.Tensor):
    """All states of one group: h_s = a_s h_{s-1} + x_s over the steps of nc consecutive chunks of t steps.

    a, x: (t, B, nc, E, N); h0: (B, E, N) state before the group.
    Returns ``buf`` (t + 1, B, nc, E, N) with buf[0] = state before each chunk and buf[s + 1] = state after step s
    (so buf[:-1] are the previous states, buf[1:] the states), and ``p`` (B, nc, E, N), each chunk's total decay.
    """
    t, nc = a.shape[0], a.shape[2]
    xs, as_ = x.unbind(0), a.unbind(0)  # one call instead of t index operations
    # pass 1: each chunk's end state from a zero start (all chunks at once) and its total decay
    e = xs[0]
    for s in range(1, t):
        e = torch.addcmul(xs[s], as_[s], e)
    p = a.prod(0)  # product of values in [0, 1]
    # carry the state across the chunks
    hin = h0.new_empty((nc,) + tuple(h0.shape))  # state before each chunk
    hins, es, ps = hin.unbind(0), e.unbind(1), p.unbind(1)
    hins[0].copy_(h0)
    for c in range(1, nc):
        torch.addcmul(es[c - 1], ps[c - 1], hins[c - 1], out=hins[c])
    # pass 2: the states from the right chunk-start states
    buf = x.new_empty((t + 1,) + tuple(x.shape[1:]))
    bufs = buf.unbind(0)
    bufs[0].copy_(hin.transpose(0, 1))
    for s in range(t):
        torch.addcmul(xs[s], as_[s], bufs[s], out=bufs[s + 1])
    return buf, p


class _ChunkedScan(torch.autograd.Function):
    """y_t = C_t . h_t with h_t = exp(delta_t A) h_{t-1} + delta_t B_t u_t (no D, z, bias: autograd does those).

    Inputs u, delta (B, E, L), A (E, N), B, C (B, N, L) with L a multiple of ``t``.
    Outputs y (B, E, L) and the last state (B, E, N).
    """

    @staticmethod
    def forward(ctx, u, delta, A, B, C, t, group_chunks, num_threads):
        ctx.t, ctx.gl, ctx.num_threads = t, t * group_chunks, num_threads
        with _intra_op_threads(num_threads, u.device):
            return _ChunkedScan._forward(ctx, u, delta, A, B, C)

    @staticmethod
    def backward(ctx, dy, dh_last):
        with _intra_op_threads(ctx.num_threads, dy.device):
            return _ChunkedScan._backward(ctx, dy, dh_last) + (None, None, None)

    @staticmethod
    def _forward(ctx, u, delta, A, B, C):
        u, delta, A, B, C = (x.contiguous() for x in (u, delta, A, B, C))
        t, gl = ctx.t, ctx.gl
        b, e, length = u.shape
        y = torch.empty_like(u)
        h = u.new_zeros(b, e, A.shape[1])
        states = []
        for s0 in range(0, length, gl):
            sl = slice(s0, min(s0 + gl, length))
            a, x = _decays_and_inputs(u[..., sl], delta[..., sl], A, B[..., sl], t)
            states.append(h)
            buf, _ = _group_states(a, x, h)
            del a, x
            y[..., sl] = _from_tbc(torch.matmul(buf[1:], _to_tbc(C[..., sl], t)[..., None]).squeeze(-1))
            h = buf[-1, :, -1].clone()
            del buf
        ctx.save_for_backward(u, delta, A, B, C, torch.stack(states))
        return y, h

    @staticmethod
    def _backward(ctx, dy, dh_last):
        u, delta, A, B, C, states = ctx.saved_tensors
        t, gl = ctx.t, ctx.gl
        length = u.shape[-1]
        du, ddelta = torch.empty_like(u), torch.empty_like(delta)
        dB, dC = torch.empty_like(B), torch.empty_like(C)
        dA = torch.zeros_like(A)
        dy = dy.contiguous()
        # lam: gradient reaching the last state of the current group from everything after it
        lam = dh_last if dh_last is not None else u.new_zeros(states.shape[1:])
        starts = list(range(0, length, gl))
        for gi in range(len(starts) - 1, -1, -1):
            sl = slice(starts[gi], min(starts[gi] + gl, length))
            d, uu = _to_tbc(delta[..., sl], t), _to_tbc(u[..., sl], t)  # (t, B, nc, E)
            bm, cm, dym = _to_tbc(B[..., sl], t), _to_tbc(C[..., sl], t), _to_tbc(dy[..., sl], t)
            a, x = _decays_and_inputs(u[..., sl], delta[..., sl], A, B[..., sl], t)
            buf, p = _group_states(a, x, states[gi])  # recomputed states of the group
            del x
            nc = a.shape[2]
            dC[..., sl] = _from_tbc(torch.matmul(dym[..., None, :], buf[1:]).squeeze(-2))  # sum_E dy * h
            # adjoint recurrence g_s = dy_s C_s + a_{s+1} g_{s+1}, two passes like the forward:
            g = dym[..., None] * cm[..., None, :]  # direct gradient of each state
            gs, as_ = g.unbind(0), a.unbind(0)
            # pass 1: each chunk's adjoint at its first step from a zero carry, times a_0: what flows out of it
            q = gs[t - 1]
            for s in range(t - 2, -1, -1):
                q = torch.addcmul(gs[s], as_[s + 1], q)
            q = q * as_[0]
            # carry backwards: mu_c = gradient entering the end of chunk c from later chunks
            mu = lam.new_empty((nc,) + tuple(lam.shape))
            mus, qs, ps = mu.unbind(0), q.unbind(1), p.unbind(1)
            mus[nc - 1].copy_(lam)
            for c in range(nc - 1, 0, -1):
                torch.addcmul(qs[c], ps[c], mus[c], out=mus[c - 1])
            lam = torch.addcmul(qs[0], ps[0], mus[0])
            del q, p
            # pass 2: the full adjoint, in place
            gs[t - 1].add_(mu.transpose(0, 1))
            for s in range(t - 2, -1, -1):
                gs[s].addcmul_(as_[s + 1], gs[s + 1])
            del mu, gs, as_
            # d loss / d log-decay = g * a * h_prev (in place in the state buffer)
            dlog = buf[:-1].mul_(a).mul_(g)
            del a
            dd = (dlog * A).sum(-1)  # (t, B, nc, E)
            dA += dlog.mul_(d[..., None]).sum((0, 1, 2))
            del dlog, buf
            # x = (delta u) B: gradients of delta u and of B
            ddu = torch.matmul(g, bm[..., None]).squeeze(-1)  # (t, B, nc, E)
            dB[..., sl] = _from_tbc(torch.matmul((d * uu)[..., None, :], g).squeeze(-2))
            del g
            ddelta[..., sl] = _from_tbc(dd + ddu * uu)
            du[..., sl] = _from_tbc(ddu * d)
        return du, ddelta, dA, dB, dC


def _scan_for_export(u, delta, A, B, C, t: int):
    """The chunked recurrence as one ``torch._higher_order_ops.scan`` over the chunks, for ``torch.export``: the group
    loop of :class:`_ChunkedScan` runs ``length / (t * group_chunks)`` times, a Python count that export would fix to
    the example input's sequence length (and a custom autograd ``Function`` cannot be saved in a program), while the
    scan operator keeps the number of chunks symbolic, so one exported program takes any H x W. Inference only (no
    hand-written backward); same states as :func:`selective_scan_sequential` step by step.

    u, delta: (B, E, nc * t); B, C: (B, N, nc * t). Returns ``y`` (B, E, nc * t) and the last state (B, E, N).
    """
    from torch._higher_order_ops.scan import scan

    def chunks(x: torch.Tensor) -> torch.Tensor:  # (B, K, nc * t) -> (nc, t, B, K)
        b, k, g = x.shape
        return x.view(b, k, g // t, t).permute(2, 3, 0, 1)

    def one_chunk(h: torch.Tensor, xs: tuple[torch.Tensor, ...]):
        d, uu, bb, cc = xs  # (t, B, E), (t, B, E), (t, B, N), (t, B, N)
        ys = []
        for s in range(t):
            h = torch.exp(d[s][:, :, None] * A) * h + (d[s] * uu[s])[:, :, None] * bb[s][:, None, :]
            ys.append((h * cc[s][:, None, :]).sum(-1))
        return h, torch.stack(ys)

    h0 = u.new_zeros(u.shape[0], u.shape[1], A.shape[1])
    last, y = scan(one_chunk, h0, (chunks(delta), chunks(u), chunks(B), chunks(C)))
    nc, _, b, e = y.shape
    return y.permute(2, 3, 0, 1).reshape(b, e, nc * t), last


def selective_scan_chunked(
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
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    group_chunks: int = DEFAULT_GROUP_CHUNKS,
    num_threads: int | None = DEFAULT_NUM_THREADS,
):
    """Chunked selective scan in pure PyTorch (same arguments and result as :func:`selective_scan_sequential`).

    Args:
        chunk_size: T, steps per chunk (the inner loop length). Any L works (padded internally to a multiple of T).
        group_chunks: chunks per group. Peak extra memory is a few (T * group_chunks, B, E, N) tensors.
        num_threads: torch intra-op threads inside the scan on CPU (restored afterwards); None keeps the current
            setting. Default 1, see ``DEFAULT_NUM_THREADS``.
    """
    check_shapes(u, delta, A, B, C, D, z, delta_bias)
    if chunk_size < 1 or group_chunks < 1:
        raise ValueError(f"chunk_size and group_chunks must be >= 1, got {chunk_size}, {group_chunks}")
    ct = compute_dtype(u.dtype)
    uc, A_, B_, C_ = u.to(ct), A.to(ct), B.to(ct), C.to(ct)
    delta = activate_delta(delta.to(ct), delta_bias, delta_softplus)
    length = u.shape[-1]
    # under torch.export the length is symbolic: a branch on it would fix the exported program to one H x W
    exporting = torch.compiler.is_exporting()
    t = chunk_size if exporting else max(1, min(chunk_size, length))
    # (one trailing chunk more when exporting: a program traced with several chunks rejects a single one)
    pad = (-length) % t + (t if exporting else 0)
    if pad:  # zero delta => decay 1 and input 0: padded steps leave the state unchanged
        uc_p, delta, B_, C_ = (F.pad(x, (0, pad)) for x in (uc, delta, B_, C_))
    else:
        uc_p = uc
    if torch.compiler.is_exporting():
        y, last = _scan_for_export(uc_p, delta, A_, B_, C_, t)
    else:
        y, last = _ChunkedScan.apply(uc_p, delta, A_, B_, C_, t, group_chunks, num_threads)
    out = skip_and_gate(y[..., :length], uc, D, z, u.dtype)
    return (out, last) if return_last_state else out
