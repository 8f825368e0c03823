"""Whole-network cost side by side in one process: training steps and the `paper` forward against its FLOP floor.

Used by ``bench_cost.py --step-table``. Every variant is timed in the same process, round-robin (one step of each
variant per round), so that the load of a shared machine hits all of them alike; the table reports medians and the
ratios of those medians.

Variants:

- ``BasicUNet(32,32,64,128,256,32)`` (MONAI, the benchmark protocol's baseline): one segmentation step
  (cross-entropy, AdamW).
- VL-DUN ``small`` with the fused numba scan and with the chunked scan, this checkout (same weights).
- optionally the same network from another checkout's ``bundle/scripts`` (``--baseline-src``; e.g. the commit
  before the fast path), loaded as a second package so it runs in the same process.
"""

from __future__ import annotations

import importlib
import importlib.util
import math
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode


def load_package(src: Path, name: str = "scripts_baseline"):
    """Import the ``scripts`` package found at ``src`` under another name (its imports are relative)."""
    if name in sys.modules:
        return importlib.import_module(f"{name}.networks")
    spec = importlib.util.spec_from_file_location(name, src / "__init__.py", submodule_search_locations=[str(src)])
    if spec is None or spec.loader is None:
        raise FileNotFoundError(f"no Python package at {src}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return importlib.import_module(f"{name}.networks")


def set_scan_backend(model: torch.nn.Module, backend: str) -> None:
    """Switch every BiMamba2D layer of ``model`` to ``backend`` (same weights)."""
    for m in model.modules():
        if hasattr(m, "backend") and hasattr(m, "fwd") and hasattr(m, "bwd"):
            m.backend = backend


def unet_step(model, opt, x, label):
    loss = torch.nn.functional.cross_entropy(model(x), label)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def vldun_step(model, opt, x, label):
    out = model(x)
    loss = torch.nn.functional.l1_loss(out["restored"], x) + torch.nn.functional.cross_entropy(out["seg"], label)
    if "modality_logits" in out:
        loss = loss + out["modality_logits"].logsumexp(-1).mean() + out["degradation_logits"].logsumexp(-1).mean()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def time_steps(variants: dict, size: int, batch: int, rounds: int) -> dict[str, list[float]]:
    """variants: name -> (model, step function). One warm-up step each, then ``rounds`` round-robin rounds."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(batch, 1, size, size, generator=g)
    label = torch.randint(0, 4, (batch, size, size), generator=g)
    state = {}
    for name, (model, step) in variants.items():
        model.train()
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
        step(model, opt, x, label)  # warm-up: allocations, lazy initialisation
        state[name] = opt
    times: dict[str, list[float]] = {name: [] for name in variants}
    for r in range(rounds):
        for name, (model, step) in variants.items():
            t0 = time.perf_counter()
            step(model, state[name], x, label)
            times[name].append(time.perf_counter() - t0)
        last = ", ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items())
        print(f"  round {r + 1}/{rounds} {size}² x{batch}: {last}", flush=True)
    for model, _ in variants.values():
        model.eval()
    return times


def matmul_gflops(reps: int = 5, n: int = 2048) -> float:
    """fp32 matrix-multiply rate of this CPU at the current thread setting (best of ``reps``), in GFLOP/s."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best = math.inf
    for _ in range(reps):
        t0 = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


def counted_flops(model: torch.nn.Module, size: int) -> tuple[float, float]:
    """(FLOPs counted by torch.utils.flop_counter at 2 per MAC, scan element-wise MAC-equivalents added analytically).

    Counted on the chunked scan (the counter sees its output contraction; the numba kernel is opaque to it).
    """
    shapes: list[tuple[int, int, int, int]] = []

    def hook(mod, args):
        b, _, h, w = args[0].shape
        shapes.append((b, h * w, mod.d_inner, mod.d_state))

    layers = [m for m in model.modules() if hasattr(m, "fwd") and hasattr(m, "d_inner")]
    handles = [m.register_forward_pre_hook(hook) for m in layers]
    set_scan_backend(model, "chunked")
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(torch.rand(1, 1, size, size))
    finally:
        for h in handles:
            h.remove()
    scan_extra = sum(3 * 2 * b * length * e * n for b, length, e, n in shapes)  # 3 MAC-eq, two directions
    return float(counter.get_total_flops()), float(scan_extra)


def time_forwards(variants: dict, size: int, rounds: int) -> dict[str, list[float]]:
    """variants: name -> (model, backend or None); batch-1 eval forwards under no_grad, round-robin."""
    x = torch.rand(1, 1, size, size, generator=torch.Generator().manual_seed(0))
    times: dict[str, list[float]] = {name: [] for name in variants}
    with torch.no_grad():
        for model, backend in variants.values():
            if backend:
                set_scan_backend(model, backend)
            model.eval()(x)  # warm-up
        for r in range(rounds):
            for name, (model, backend) in variants.items():
                if backend:
                    set_scan_backend(model, backend)
                t0 = time.perf_counter()
                model(x)
                times[name].append(time.perf_counter() - t0)
            last = ", ".join(f"{k} {v[-1]:.1f} s" for k, v in times.items())
            print(f"  round {r + 1}/{rounds} paper {size}²: {last}", flush=True)
    return times


def median(xs: list[float]) -> float:
    return statistics.median(xs)
