"""Cost of VL-DUN against MONAI baselines: parameters, FLOPs/MACs at 256², CPU forward latency at several sizes.

Usage (from the repository root)::

    python benchmarks/bench_cost.py                                  # everything (slow on a 2-core CPU)
    python benchmarks/bench_cost.py --models small basicunet_small --sizes 64 128 --no-flops

FLOPs are counted with ``torch.utils.flop_counter.FlopCounterMode`` on a 1 x 1 x 256 x 256 input. That counter counts
matrix products and convolutions at 2 FLOPs per multiply-accumulate (MAC); we report both the counted FLOPs and
MACs = FLOPs / 2. The paper's "167.24 GFLOPs" (Table 5) are almost certainly MACs (the usual thop/ptflops
convention; Restormer's published 140.99 "GFLOPs" at 256² are MACs too), so compare with the MAC column.

The counter does not see the selective scan's element-wise recurrence. It does see the BiMamba projections, the
causal conv1d and the scan's output contraction ``C_t . h_t`` (a batched matmul, 1 MAC per (token, channel, state)
and direction). Per (token, channel, state) and direction, the remaining work is the decay ``exp(delta * A)``
(1 multiply + 1 exp), the input ``delta * u * B`` (1 multiply, as ``delta * u`` is shared over the states) and the
state update ``a * h + x`` (1 MAC). We count these as 3 MAC-equivalents (an exp counted as one) and add them
analytically: ``scan_extra = 3 * 2 * B * L * E * N`` per BiMamba2D layer, with L = H * W at that layer's level (read
by forward hooks during the counted forward). The CLIP visual encoder is reported separately (its input is resized
to the CLIP size whatever the image size).

``--step-table`` instead measures the whole network side by side in one process (see ``_step_cost.py``): training
steps of VL-DUN ``small`` (numba and chunked scans, optionally an older checkout via ``--baseline-src``) and of
MONAI's BasicUNet at 128² batch 8 and 64² batch 4, and the ``paper`` forward at 256² against its FLOP floor (the
counted FLOPs divided by this CPU's fp32 matmul rate, measured in the same run), at each of ``--thread-list``::

    git worktree add /tmp/base 759694c   # the commit before the fused scan, for the baseline column
    python benchmarks/bench_cost.py --step-table --baseline-src /tmp/base/bundle/scripts

Latency: ``model.eval()`` forward under ``torch.no_grad()``, batch 1, one warm-up call per model; each size is timed
``--reps`` times (once only when a call takes longer than ``--long`` seconds) and the best time is reported.
``--threads`` sets ``torch.set_num_threads`` (default 1: on a shared, oversubscribed CPU, intra-op threads stall each
other and make timings several times slower and erratic).
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import os
import platform
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bundle"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _machine import cpu_name  # noqa: E402

from scripts.networks import VLDUN, BiMamba2D  # noqa: E402

PAPER = {"params_M": 22.77, "gflops": 167.24, "ms": 58.72}


def build(name: str, num_classes: int = 4) -> torch.nn.Module:
    from monai.networks.nets import BasicUNet, SwinUNETR

    if name in ("paper", "small"):
        return VLDUN.from_preset(name, num_classes=num_classes)
    if name == "basicunet":  # about the paper's size
        return BasicUNet(
            spatial_dims=2, in_channels=1, out_channels=num_classes, features=(104, 104, 208, 416, 832, 104)
        )
    if name == "basicunet_small":  # MONAI's default features (the benchmark protocol's baseline)
        return BasicUNet(spatial_dims=2, in_channels=1, out_channels=num_classes, features=(32, 32, 64, 128, 256, 32))
    if name == "swinunetr":
        return SwinUNETR(in_channels=1, out_channels=num_classes, feature_size=48, spatial_dims=2)
    raise ValueError(f"unknown model {name!r}")


def count_params(model: torch.nn.Module) -> tuple[int, int]:
    """(trainable parameters without the CLIP encoder, CLIP encoder parameters)."""
    if isinstance(model, VLDUN):
        n = model.num_parameters()
        return n, model.num_parameters(include_clip_encoder=True) - n
    return sum(p.numel() for p in model.parameters() if p.requires_grad), 0


def count_flops(model: torch.nn.Module, size: int) -> dict[str, float]:
    """Counted FLOPs (total and CLIP encoder) and the analytic scan remainder, for one 1 x 1 x size x size input."""
    shapes: list[tuple[int, int, int, int, int]] = []  # (B, L, E, N) per BiMamba2D call

    def hook(mod, args):
        b, _, h, w = args[0].shape
        shapes.append((b, h * w, mod.d_inner, mod.d_state))

    handles = [m.register_forward_pre_hook(hook) for m in model.modules() if isinstance(m, BiMamba2D)]
    x = torch.rand(1, 1, size, size)
    try:
        with torch.no_grad(), FlopCounterMode(display=False, depth=None) as fc:
            model(x)
    finally:
        for h in handles:
            h.remove()
    counts = fc.get_flop_counts()
    clip = sum(v for k, d in counts.items() if k.endswith("clip_prior.visual") for v in d.values())
    scan_extra_macs = sum(3 * 2 * b * L * e * n for b, L, e, n in shapes)
    return {
        "flops": float(fc.get_total_flops()),
        "clip_flops": float(clip),
        "scan_extra_macs": float(scan_extra_macs),
        "bimamba_calls": len(shapes),
    }


def time_forward(model: torch.nn.Module, size: int, reps: int, long_s: float) -> float:
    x = torch.rand(1, 1, size, size)
    best = math.inf
    with torch.no_grad():
        for _ in range(max(1, reps)):
            t0 = time.perf_counter()
            model(x)
            t = time.perf_counter() - t0
            best = min(best, t)
            if t > long_s:
                break
    return best


def time_train_step(model: torch.nn.Module, size: int, batch: int, iters: int) -> float:
    """Median seconds of one training step (forward, L1 + CE (+ logits) loss, backward, AdamW step)."""
    from _step_cost import time_steps, vldun_step

    times = time_steps({"model": (model, vldun_step)}, size, batch, iters)["model"]
    return sorted(times)[len(times) // 2]


def machine() -> str:
    cpu = cpu_name()
    load = os.getloadavg() if hasattr(os, "getloadavg") else ("?",)
    return (
        f"{platform.platform()}; CPU {cpu}, {os.cpu_count()} logical cores; load average at start "
        f"{', '.join(f'{v:.1f}' for v in load)}; Python {platform.python_version()}, torch {torch.__version__}"
    )


def plot(results: dict[str, dict], sizes: list[int], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    for name, r in results.items():
        pts = [(s * s, r["latency"][s]) for s in sizes if s in r["latency"]]
        if pts:
            ax.loglog([p for p, _ in pts], [t * 1e3 for _, t in pts], "o-", label=name)
    # slope-1 reference through the first point of the first model
    first = next((r for r in results.values() if r["latency"]), None)
    if first:
        s0 = min(first["latency"])
        px = [s * s for s in sizes]
        ax.loglog(px, [first["latency"][s0] * 1e3 * p / (s0 * s0) for p in px], "k:", lw=1, label="∝ pixels")
    ax.set_xlabel("pixels (H × W)")
    ax.set_ylabel("CPU forward latency (ms, batch 1)")
    ax.set_title("Forward latency vs image size")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def step_table(args, command: str) -> None:
    """``--step-table``: whole-network training steps and the paper forward, every variant in this process."""
    import _step_cost as sc

    from scripts.networks.selective_scan_numba import warm_up

    started = dt.datetime.now().astimezone()
    info = machine()
    compile_s = warm_up()  # excluded from the timings (numba's cache makes it a load after the first run)
    base_nets = sc.load_package(Path(args.baseline_src)) if args.baseline_src else None
    base_label = f"VL-DUN small, chunked scan, baseline ({args.baseline_label})"
    sections = []
    for threads in args.thread_list:
        torch.set_num_threads(threads)
        torch.manual_seed(0)
        train = {}
        for size, batch in ((128, 8), (64, 4)):
            torch.manual_seed(0)
            vl = VLDUN.from_preset("small", num_classes=4)
            vl_chunked = VLDUN.from_preset("small", num_classes=4, scan_backend="chunked")
            vl_chunked.load_state_dict(vl.state_dict())
            variants = {
                "BasicUNet(32,32,64,128,256,32)": (build("basicunet_small"), sc.unet_step),
                "VL-DUN small, numba scan": (vl, sc.vldun_step),
                "VL-DUN small, chunked scan": (vl_chunked, sc.vldun_step),
            }
            if base_nets is not None:
                torch.manual_seed(0)
                variants[base_label] = (base_nets.VLDUN.from_preset("small", num_classes=4), sc.vldun_step)
            print(f"[threads {threads}] training steps {size}² batch {batch}", flush=True)
            train[(size, batch)] = sc.time_steps(variants, size, batch, args.rounds)
            del variants, vl, vl_chunked
        print(f"[threads {threads}] paper forward {args.paper_size}²", flush=True)
        rate = sc.matmul_gflops()
        torch.manual_seed(0)
        paper = VLDUN.from_preset("paper", num_classes=4).eval()
        fwd_variants = {"numba scan": (paper, "numba"), "chunked scan": (paper, "chunked")}
        if base_nets is not None:
            base_paper = base_nets.VLDUN.from_preset("paper", num_classes=4).eval()
            fwd_variants[f"chunked scan, baseline ({args.baseline_label})"] = (base_paper, None)
        fwd = sc.time_forwards(fwd_variants, args.paper_size, args.paper_rounds)
        flops, scan_extra = sc.counted_flops(paper, args.paper_size)
        floor = (flops + 2 * scan_extra) / (rate * 1e9)
        del paper, fwd_variants
        sections.append((threads, train, fwd, rate, flops, scan_extra, floor))

    lines = [
        "# Whole-network cost side by side: training steps and the paper forward",
        "",
        f"- Date: {started.isoformat(timespec='seconds')} (run took {dt.datetime.now().astimezone() - started})",
        f"- Machine: {info}",
        f"- OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset, as in a training run)')}; numba "
        f"{_numba_version()}; numba kernels loaded/compiled before timing in {compile_s:.1f} s",
        f"- Command: `{command}`",
        f"- Training step: forward + L1/CE/logit losses + backward + AdamW (BasicUNet: CE + AdamW); one warm-up step "
        f"per variant, then {args.rounds} round-robin rounds (one step of each variant per round); medians. The "
        "numba and chunked VL-DUN variants share their weights.",
        f"- Paper forward: batch 1, {args.paper_size}², eval, no_grad; one warm-up, then {args.paper_rounds} "
        "round-robin rounds; medians. FLOP floor = (FLOPs counted by `torch.utils.flop_counter`, 2 per MAC, CLIP "
        "encoder included + 2 x the scan's element-wise MAC-equivalents) / the fp32 `torch.mm` rate (2048³, best of "
        "5) measured in the same run at the same threads.",
        "",
    ]
    for threads, train, fwd, rate, flops, scan_extra, floor in sections:
        lines += [f"## {threads} thread{'s' if threads > 1 else ''} (`torch.set_num_threads({threads})`)", ""]
        keys = list(train)
        head = "| variant | " + " | ".join(f"{s}² x{b} (s/step) | vs BasicUNet" for s, b in keys) + " |"
        lines += [head, "|---|" + "---:|---:|" * len(keys)]
        names = list(train[keys[0]])
        for name in names:
            cells = []
            for k in keys:
                med = sc.median(train[k][name])
                cells.append(f"{med:.2f} | {med / sc.median(train[k][names[0]]):.1f}x")
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
        for k in keys:
            t = {n: sc.median(v) for n, v in train[k].items()}
            numba_t = t["VL-DUN small, numba scan"]
            speed = [f"{t['VL-DUN small, chunked scan'] / numba_t:.2f}x vs the chunked scan (same layout)"]
            if base_label in t:
                speed.append(f"{t[base_label] / numba_t:.2f}x vs the baseline")
            lines.append(f"- {k[0]}² x{k[1]}: numba step " + ", ".join(speed))
        lines += [
            "",
            f"Paper preset forward at {args.paper_size}² (fp32 matmul {rate:.0f} GFLOP/s; counted {flops / 1e9:.1f} "
            f"GFLOPs = {flops / 2e9:.1f} G MAC, + {scan_extra / 1e9:.1f} G MAC-eq scan element-wise; floor "
            f"{floor:.2f} s):",
            "",
            "| variant | forward (s) | vs FLOP floor |",
            "|---|---:|---:|",
        ]
        for name, v in fwd.items():
            lines.append(f"| {name} | {sc.median(v):.2f} | {sc.median(v) / floor:.1f}x |")
        if len(fwd) > 1:
            names = list(fwd)
            lines += [
                "",
                "- numba forward speed-up: "
                + ", ".join(f"{sc.median(fwd[n]) / sc.median(fwd[names[0]]):.2f}x vs {n}" for n in names[1:]),
            ]
        lines.append("")
    text = "\n".join(lines)
    print("\n" + text)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(f"wrote {out}")


def _numba_version() -> str:
    try:
        import numba
    except ImportError:
        return "not installed"
    return numba.__version__


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=["paper", "small", "basicunet", "swinunetr", "basicunet_small"])
    ap.add_argument("--sizes", nargs="+", type=int, default=[128, 256, 512])
    ap.add_argument("--flops-size", type=int, default=256)
    ap.add_argument("--no-flops", action="store_true")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--long", type=float, default=20.0, help="time a size only once when a call exceeds this (s)")
    ap.add_argument("--train-sizes", nargs="*", type=int, default=[], help="also time training steps (VL-DUN)")
    ap.add_argument("--train-batch", type=int, default=2)
    ap.add_argument("--train-iters", type=int, default=3)
    ap.add_argument("--step-table", action="store_true", help="whole-network side-by-side table (see above)")
    ap.add_argument("--thread-list", nargs="+", type=int, default=[2, 1], help="--step-table: thread counts")
    ap.add_argument("--rounds", type=int, default=3, help="--step-table: round-robin training-step rounds")
    ap.add_argument("--paper-size", type=int, default=256)
    ap.add_argument("--paper-rounds", type=int, default=2)
    ap.add_argument("--baseline-src", default=None, help="--step-table: another checkout's bundle/scripts")
    ap.add_argument("--baseline-label", default="759694c", help="--step-table: how the baseline is named")
    ap.add_argument("--out", default=None, help="results file (default cost.md, or cost_step.md with --step-table)")
    ap.add_argument("--plot", default=str(ROOT / "benchmarks/results/cost_latency.png"))
    args = ap.parse_args(argv)
    command = "python " + " ".join([os.path.relpath(__file__, ROOT)] + (sys.argv[1:] if argv is None else argv))
    if args.step_table:
        args.out = args.out or str(ROOT / "benchmarks/results/cost_step.md")
        step_table(args, command)
        return
    args.out = args.out or str(ROOT / "benchmarks/results/cost.md")

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    started = dt.datetime.now().astimezone()
    info = machine()
    sizes = sorted(args.sizes)
    results: dict[str, dict] = {}
    for name in args.models:
        model = build(name).eval()
        r: dict = {"latency": {}}
        r["params"], r["clip_params"] = count_params(model)
        print(f"[{name}] params {r['params'] / 1e6:.2f}M (+ CLIP encoder {r['clip_params'] / 1e6:.2f}M)", flush=True)
        if not args.no_flops:
            t0 = time.perf_counter()
            r.update(count_flops(model, args.flops_size))
            print(
                f"[{name}] counted {r['flops'] / 1e9:.2f} GFLOPs at {args.flops_size}² "
                f"(CLIP {r['clip_flops'] / 1e9:.2f}), scan extra {r['scan_extra_macs'] / 1e9:.2f} GMAC "
                f"({time.perf_counter() - t0:.0f} s)",
                flush=True,
            )
        with torch.no_grad():  # warm-up (first-call allocations, lazy inits)
            model(torch.rand(1, 1, sizes[0], sizes[0]))
        for s in sizes:
            r["latency"][s] = time_forward(model, s, args.reps, args.long)
            print(f"[{name}] {s}²: {r['latency'][s] * 1e3:.0f} ms", flush=True)
        r["train"] = {}
        if isinstance(model, VLDUN):
            for s in args.train_sizes:
                r["train"][s] = time_train_step(model, s, args.train_batch, args.train_iters)
                print(f"[{name}] train step {args.train_batch}x{s}²: {r['train'][s]:.2f} s", flush=True)
        results[name] = r
        del model

    # ---------------------------------------------------------------- table
    fs = args.flops_size
    head = ["model", "params (M)", "CLIP enc. (M)"]
    if not args.no_flops:
        head += [
            f"FLOPs counted @{fs}² (G, 2/MAC)",
            "MACs counted (G)",
            "scan element-wise (G MAC-eq)",
            "total MACs (G)",
            "of which CLIP (G MAC)",
        ]
    head += [f"{s}² (ms)" for s in sizes]
    if len(sizes) > 1:
        head.append(f"slope {sizes[0]}²→{sizes[-1]}²")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, r in results.items():
        row = [name, f"{r['params'] / 1e6:.2f}", f"{r['clip_params'] / 1e6:.2f}" if r["clip_params"] else "–"]
        if not args.no_flops:
            macs = r["flops"] / 2
            row += [
                f"{r['flops'] / 1e9:.1f}",
                f"{macs / 1e9:.1f}",
                f"{r['scan_extra_macs'] / 1e9:.1f}" if r["scan_extra_macs"] else "–",
                f"{(macs + r['scan_extra_macs']) / 1e9:.1f}",
                f"{r['clip_flops'] / 2e9:.1f}" if r["clip_flops"] else "–",
            ]
        row += [f"{r['latency'][s] * 1e3:.0f}" for s in sizes]
        if len(sizes) > 1:
            a, b = sizes[0], sizes[-1]
            row.append(f"{math.log(r['latency'][b] / r['latency'][a]) / math.log((b * b) / (a * a)):.2f}")
        lines.append("| " + " | ".join(row) + " |")
    if args.train_sizes:
        lines += [
            "",
            f"Training step (batch {args.train_batch}, forward + L1/CE/logit losses + backward + AdamW; median of "
            f"{args.train_iters} after a warm-up):",
            "",
            "| model | " + " | ".join(f"{s}² (s/step)" for s in args.train_sizes) + " | steps/s at "
            f"{args.train_sizes[0]}² |",
            "|" + "---|" * (len(args.train_sizes) + 2),
        ]
        for name, r in results.items():
            if r["train"]:
                row = [name] + [f"{r['train'][s]:.2f}" for s in args.train_sizes]
                row.append(f"{1 / r['train'][args.train_sizes[0]]:.2f}")
                lines.append("| " + " | ".join(row) + " |")
    table = "\n".join(lines)
    print("\n" + table + "\n")

    plot_path = Path(args.plot)
    plot(results, sizes, plot_path)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    notes = [
        "# Cost: parameters, FLOPs/MACs, CPU latency",
        "",
        f"- Date: {started.isoformat(timespec='seconds')} (run took {(dt.datetime.now().astimezone() - started)})",
        f"- Machine: {info}",
        f"- Threads: `torch.set_num_threads({args.threads})`; batch 1; eval mode, `torch.no_grad()`; best of up to "
        f"{args.reps} calls after one warm-up (one call when it exceeds {args.long:g} s)",
        f"- Command: `{command}`",
        "",
        table,
        "",
        f"Paper (Table 5, RTX Pro 6000): {PAPER['params_M']}M parameters, {PAPER['gflops']} G at 256² (MACs, see "
        f"below), {PAPER['ms']} ms.",
        "",
        "- **params**: trainable parameters without the CLIP encoder (VL-DUN's convention, see `vldun.py`); the "
        "CLIP visual encoder (trained in the paper, not part of its 22.77M) is listed separately.",
        "- **FLOPs counted**: `torch.utils.flop_counter` (2 FLOPs per multiply-accumulate) on a 1×1×"
        f"{fs}×{fs} input, CLIP included. **MACs** = FLOPs / 2: the unit of the paper's 167.24 G.",
        "- **scan element-wise**: the selective scan's recurrence, which the counter does not see, added "
        "analytically as 3 MAC-equivalents per (token, inner channel, state) and direction (decay exp(ΔA), input "
        "ΔuB, state update); the counter already sees the projections, the conv1d and the output contraction C·h.",
        "- **total MACs** = MACs counted + scan element-wise (CLIP included; subtract the CLIP column for the "
        "restoration network alone).",
        "- **slope**: d log(latency) / d log(pixels) between the smallest and the largest size (1 = linear).",
        f"- Plot: `{os.path.relpath(plot_path, out.parent)}` (log-log latency vs pixel count).",
        "- Latency on this CPU is not comparable with the paper's GPU time; the machine was shared with other jobs.",
        "",
    ]
    out.write_text("\n".join(notes))
    print(f"wrote {out} and {plot_path}")


if __name__ == "__main__":
    main()
