"""CPU selective-scan benchmark: our fused numba scan and chunked scan vs mambapy's parallel scan vs a sequential one.

Run from the repository root::

    python benchmarks/bench_scan.py                 # L = 4,096 / 16,384 / 65,536, E = 96, N = 16, B = 1,
                                                    # timed at 2 threads, then at 1 thread
    python benchmarks/bench_scan.py --small-step    # the shapes of one `small` 128² batch-8 training step (with
                                                    # their call counts) and (1, 96, 65,536, 16); sums per step
    python benchmarks/bench_scan.py --tune          # also a chunk_size x group_chunks grid for the defaults

Prints a markdown table and writes ``benchmarks/results/scan.md`` and ``scan.png`` (``scan_small_step.*`` with
``--small-step``).

All compute the same thing (Mamba-1 semantics, float32): y = selective_scan(u, delta, A, B, C, D) with delta
already positive; the loss is sum(y^2). Timings are wall-clock, best of ``--reps`` (the sequential scan is run once
at L >= 65,536: its backward takes ~30 s). Peak memory is the peak of live tensor bytes allocated during forward +
backward (inputs excluded), from torch.profiler's allocation/free events (``profile_memory=True``), in a separate
run so that the profiler does not affect the timings. OMP_WAIT_POLICY defaults to PASSIVE (see scan.md).
"""

from __future__ import annotations

import argparse
import datetime
import gc
import os
import platform
import shlex
import sys
import time
from pathlib import Path

# must be set before torch (and its OpenMP runtime) is loaded; see the note written into scan.md
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bundle"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _machine import cpu_name  # noqa: E402

from scripts.networks.selective_scan import (  # noqa: E402
    DEFAULT_CHUNK_SIZE,
    DEFAULT_GROUP_CHUNKS,
    DEFAULT_NUM_THREADS,
    selective_scan_chunked,
    selective_scan_sequential,
)
from scripts.networks.selective_scan_numba import numba_available, selective_scan_numba, warm_up  # noqa: E402

try:
    from mambapy.pscan import pscan as mambapy_pscan
except ImportError:  # mambapy is in requirements.txt, but keep the benchmark usable without it
    mambapy_pscan = None


# ------------------------------------------------------------------------------------------------------------------
# the three implementations, each taking the inputs in its own layout
# ------------------------------------------------------------------------------------------------------------------
# (B, E, L, N, calls per training step): the scans of one `small` 128² batch-8 step (7 stages x 2 BiMamba layers x 2
# directions = 28 calls; dec1 and refine run at 2C), read off the network with forward hooks
SMALL_STEP_SHAPES = [
    (8, 16, 16384, 8, 4),
    (8, 32, 16384, 8, 4),
    (8, 32, 4096, 8, 8),
    (8, 64, 1024, 8, 8),
    (8, 128, 256, 8, 4),
]
LONG_SHAPE = (1, 96, 65536, 16, 0)  # the paper preset's longest scan; not part of the small step's sum


def make_inputs(length: int, e: int = 96, n: int = 16, b: int = 1, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {
        "u": torch.randn(b, e, length, generator=g),
        "delta": torch.nn.functional.softplus(torch.randn(b, e, length, generator=g) - 2.0),
        "A": -torch.arange(1, n + 1, dtype=torch.float32).repeat(e, 1),  # Mamba's A = -(1..N)
        "B": torch.randn(b, n, length, generator=g),
        "C": torch.randn(b, n, length, generator=g),
        "D": torch.ones(e),
    }


def run_chunked(inp, chunk_size=DEFAULT_CHUNK_SIZE, group_chunks=DEFAULT_GROUP_CHUNKS):
    return selective_scan_chunked(**inp, chunk_size=chunk_size, group_chunks=group_chunks)


def run_numba(inp):
    return selective_scan_numba(**inp)


def run_sequential(inp):
    return selective_scan_sequential(**inp)


def to_mambapy_layout(inp: dict) -> dict:
    """mambapy works on (B, L, E) / (B, L, N)."""
    return {k: (v.transpose(1, 2).contiguous() if v.dim() == 3 else v) for k, v in inp.items()}


def run_mambapy(inp):
    """mambapy.mamba.MambaBlock.selective_scan (pscan=True), written out for inputs in (B, L, .) layout."""
    x, delta, A, B, C, D = (inp[k] for k in ("u", "delta", "A", "B", "C", "D"))
    delta_a = torch.exp(delta.unsqueeze(-1) * A)  # (B, L, E, N)
    bx = (delta.unsqueeze(-1) * B.unsqueeze(2)) * x.unsqueeze(-1)  # (B, L, E, N)
    hs = mambapy_pscan(delta_a, bx)  # pads L to a power of 2, materialises (B, L, E, N)
    y = (hs @ C.unsqueeze(-1)).squeeze(3)
    return y + D * x  # (B, L, E)


METHODS = {
    "numba fused (ours)": (run_numba, lambda inp: inp, lambda y: y),
    "chunked (ours)": (run_chunked, lambda inp: inp, lambda y: y),
    "mambapy pscan": (run_mambapy, to_mambapy_layout, lambda y: y.transpose(1, 2)),
    "sequential": (run_sequential, lambda inp: inp, lambda y: y),
}


# ------------------------------------------------------------------------------------------------------------------
# measurements
# ------------------------------------------------------------------------------------------------------------------
def leaves(inp: dict) -> dict:
    return {k: v.detach().clone().requires_grad_(True) for k, v in inp.items()}


def time_once(fn, inp):
    gc.collect()
    x = leaves(inp)
    c0, t0 = time.process_time(), time.perf_counter()
    y = fn(x)
    t1 = time.perf_counter()
    y.square().sum().backward()
    t2, c2 = time.perf_counter(), time.process_time()
    return t1 - t0, t2 - t1, c2 - c0, y.detach()


def peak_memory_bytes(fn, inp) -> int:
    """Peak of live tensor bytes allocated during forward + backward (inputs, created before, excluded)."""
    from torch.profiler import ProfilerActivity, profile

    gc.collect()
    x = leaves(inp)
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        y = fn(x)
        y.square().sum().backward()
        del y
    events = sorted(
        (e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"), key=lambda e: e.start_ns()
    )
    cur = peak = 0
    for e in events:
        cur += e.nbytes()
        peak = max(peak, cur)
    return peak


def machine_description(threads: int) -> str:
    cpu = cpu_name("unknown CPU")
    return (
        f"{cpu}, {os.cpu_count()} logical CPUs visible, torch {torch.__version__} "
        f"({torch.get_num_threads()} of {threads} requested threads), Python {platform.python_version()}, "
        f"{platform.system()} {platform.release()}"
    )


def load_average() -> str:
    try:
        return " / ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def benchmark(cases, thread_counts, reps, seq_once_from, methods, seq_max_length=None):
    """Rows {shape, count, method, threads, fwd, bwd, reps, mem, err}; memory is measured once per (case, method).

    ``cases``: (B, E, L, N, calls per step) tuples.
    """
    rows = []
    for b, e, length, n, count in cases:
        inp = make_inputs(length, e=e, n=n, b=b)
        shape = (b, e, length, n)
        outputs, mems = {}, {}
        for ti, threads in enumerate(thread_counts):
            torch.set_num_threads(threads)
            for name in methods:
                fn, layout, back = METHODS[name]
                if name == "mambapy pscan" and mambapy_pscan is None:
                    continue
                if name == "numba fused (ours)" and not numba_available():
                    continue
                if name == "sequential" and seq_max_length is not None and length > seq_max_length:
                    continue
                long_seq = name == "sequential" and length >= seq_once_from
                if long_seq and ti > 0:  # the ~30 s backward is run once only
                    continue
                n_rep = 1 if long_seq else reps
                best_f = best_b = best_c = float("inf")
                for _ in range(n_rep):
                    tf, tb, tc, y = time_once(fn, layout(inp))
                    best_f, best_b, best_c = min(best_f, tf), min(best_b, tb), min(best_c, tc)
                outputs[name] = back(y)
                rows.append(
                    {
                        "L": length,
                        "shape": shape,
                        "count": count,
                        "method": name,
                        "threads": threads,
                        "fwd": best_f,
                        "bwd": best_b,
                        "cpu": best_c,
                        "reps": n_rep,
                    }
                )
                print(
                    f"  {shape} {name:<18} {threads} thr  fwd {best_f:7.3f} s  bwd {best_b:7.3f} s  ({n_rep} run(s))",
                    flush=True,
                )
        torch.set_num_threads(thread_counts[0])
        for name in outputs:
            fn, layout, _ = METHODS[name]
            if not (name == "sequential" and length >= seq_once_from):  # else extrapolated below
                mems[name] = peak_memory_bytes(fn, layout(inp))
        ref = outputs.get("sequential")
        for r in rows:
            if r["shape"] == shape:
                r["mem"] = mems.get(r["method"])
                r["err"] = None if ref is None else (outputs[r["method"]] - ref).abs().max().item()
        del outputs
    # sequential memory at the longest lengths: linear in L, fitted through the two shortest measured lengths
    seq = sorted({(r["L"], r["mem"]) for r in rows if r["method"] == "sequential" and r["mem"] is not None})
    for r in rows:
        if r["method"] == "sequential" and r["mem"] is None and len(seq) >= 2:
            (l0, m0), (l1, m1) = seq[0], seq[1]
            r["mem"] = m0 + (m1 - m0) * (r["L"] - l0) / (l1 - l0)
            r["mem_extrapolated"] = True
    return rows


def step_summary(rows, baseline: str = "chunked (ours)") -> str:
    """Per thread count and method: forward + backward summed over one training step's calls, and the speed-up
    and memory ratio of each method against ``baseline`` (per shape: the smallest speed-up and largest ratio)."""
    lines = [
        f"| threads | method | step sum fwd+bwd (s) | speed-up vs {baseline} (step sum) | smallest per-shape "
        "speed-up | largest per-shape peak-memory ratio |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    for threads in sorted({r["threads"] for r in rows}, reverse=True):
        at = [r for r in rows if r["threads"] == threads]
        base = {r["shape"]: r for r in at if r["method"] == baseline}
        for method in dict.fromkeys(r["method"] for r in at):
            mine = {r["shape"]: r for r in at if r["method"] == method}
            total = sum((r["fwd"] + r["bwd"]) * r["count"] for r in mine.values())
            if not base or set(mine) != set(base):
                lines.append(f"| {threads} | {method} | {total:.3f} | – | – | – |")
                continue
            btotal = sum((r["fwd"] + r["bwd"]) * r["count"] for r in base.values())
            speed = [(base[k]["fwd"] + base[k]["bwd"]) / (mine[k]["fwd"] + mine[k]["bwd"]) for k in mine]
            mem = [mine[k]["mem"] / base[k]["mem"] for k in mine if mine[k].get("mem") and base[k].get("mem")]
            lines.append(
                f"| {threads} | {method} | {total:.3f} | {btotal / total:.2f}x | {min(speed):.2f}x | {max(mem):.2f} |"
                if mem
                else f"| {threads} | {method} | {total:.3f} | {btotal / total:.2f}x | {min(speed):.2f}x | – |"
            )
    return "\n".join(lines)


def tune(length, grid_t, grid_g, reps):
    inp = make_inputs(length)
    lines = [
        f"Chunked scan, L = {length:,}, {torch.get_num_threads()} threads, fwd + bwd wall seconds (best of {reps}), "
        "rows chunk_size, "
        "columns group_chunks:",
        "",
        "| chunk_size \\ group_chunks | " + " | ".join(str(g) for g in grid_g) + " |",
        "|---|" + "---|" * len(grid_g),
    ]
    for t in grid_t:
        cells = []
        for g in grid_g:
            best = min(sum(time_once(lambda x, t=t, g=g: run_chunked(x, t, g), inp)[:2]) for _ in range(reps))
            cells.append(f"{best:.3f}")
            print(f"  tune T={t} G={g}: {best:.3f} s", flush=True)
        lines.append(f"| {t} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_table(rows) -> str:
    out = [
        "| (B, E, L, N) | calls/step | method | threads | fwd (s) | bwd (s) | fwd+bwd (s) | fwd+bwd CPU time (s) "
        "| peak live tensor memory (MB) | max abs diff vs sequential |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        mem = (
            "n/a"
            if r.get("mem") is None
            else f"{r['mem'] / 1e6:,.0f}" + (" (extrap.)" if r.get("mem_extrapolated") else "")
        )
        err = "–" if r["err"] is None or r["method"] == "sequential" else f"{r['err']:.1e}"
        runs = "" if r["reps"] > 1 else " ¹"
        out.append(
            f"| {r['shape']} | {r['count'] or '–'} | {r['method']}{runs} | {r['threads']} | {r['fwd']:.3f} | "
            f"{r['bwd']:.3f} | {r['fwd'] + r['bwd']:.3f} | {r['cpu']:.3f} | {mem} | {err} |"
        )
    return "\n".join(out)


def _elements(r) -> int:
    b, e, length, _ = r["shape"]
    return b * e * length


def compile_seconds() -> dict[str, float]:
    """Seconds of ``warm_up()`` in fresh processes: with an empty numba cache (compile) and then with it filled."""
    import subprocess
    import tempfile

    code = "from scripts.networks.selective_scan_numba import warm_up; print(warm_up())"  # float32, as training
    env = {**os.environ, "PYTHONPATH": str(ROOT / "bundle")}
    out = {}
    with tempfile.TemporaryDirectory() as cache:
        env["NUMBA_CACHE_DIR"] = cache
        for key in ("compile (empty cache)", "load (filled cache)"):
            res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
            out[key] = float(res.stdout.strip().splitlines()[-1])
    return out


def plot(rows, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    thread_counts = list(dict.fromkeys(r["threads"] for r in rows))
    for ci, name in enumerate(METHODS):
        for ti, threads in enumerate(thread_counts):
            rs = [r for r in rows if r["method"] == name and r["threads"] == threads]
            if not rs:
                continue
            style = ("o-", "s--", "^:")[ti % 3]
            axes[0].plot(
                [_elements(r) for r in rs],
                [r["fwd"] + r["bwd"] for r in rs],
                style,
                color=f"C{ci}",
                label=f"{name}, {threads} thr",
            )
            if ti == 0:
                axes[1].plot([_elements(r) for r in rs], [r["mem"] / 1e6 for r in rs], "o", color=f"C{ci}", label=name)
    for ax, title in zip(axes, ("forward + backward time (s)", "peak live tensor memory (MB)")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("B x E x L (float32; see the table for each shape)")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--lengths", type=int, nargs="+", default=[4096, 16384, 65536])
    p.add_argument("--threads", type=int, nargs="+", default=[2, 1], help="thread counts, each timed")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--seq-once-from", type=int, default=65536, help="run the sequential scan once from this L on")
    p.add_argument("--seq-max-length", type=int, default=None, help="skip the sequential scan above this L")
    p.add_argument("--note", action="append", default=[], help="extra bullet for scan.md (repeatable)")
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    p.add_argument("--small-step", action="store_true", help="the scan shapes of one small-preset training step")
    p.add_argument("--tune", action="store_true", help="also time a chunk_size x group_chunks grid")
    p.add_argument("--tune-length", type=int, default=16384)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads[0])
    command = "python " + shlex.join([os.path.relpath(__file__, ROOT)] + (sys.argv[1:] if argv is None else argv))
    started = datetime.datetime.now().astimezone()
    load_before = load_average()
    print(f"# {command}\n# {machine_description(args.threads[0])}\n# load average before: {load_before}", flush=True)

    compile_txt = ""
    if numba_available() and "numba fused (ours)" in args.methods:
        secs = compile_seconds()
        compile_txt = "numba JIT, `warm_up()` (the float32 kernels) in a fresh process: " + ", ".join(
            f"{k} {v:.1f} s" for k, v in secs.items()
        )
        print(f"# {compile_txt}", flush=True)
        warm_up()
    if args.small_step:
        cases = SMALL_STEP_SHAPES + [LONG_SHAPE]
    else:
        cases = [(1, 96, length, 16, 0) for length in args.lengths]
    rows = benchmark(cases, args.threads, args.reps, args.seq_once_from, args.methods, args.seq_max_length)
    table = format_table(rows)
    summary = step_summary([r for r in rows if r["count"]]) if args.small_step else ""
    tune_txt = ""
    if args.tune:
        torch.set_num_threads(args.threads[0])
        tune_txt = tune(args.tune_length, [4, 8, 16, 32], [4, 8, 16, 32], args.reps)
    load_after = load_average()
    print()
    print(table)
    if summary:
        print()
        print(summary)
    if tune_txt:
        print()
        print(tune_txt)

    args.out.mkdir(parents=True, exist_ok=True)
    stem = "scan_small_step" if args.small_step else "scan"
    png = args.out / f"{stem}.png"
    plot(rows, png)
    md = [
        "# CPU selective scan: numba fused and chunked (ours) vs mambapy parallel scan vs sequential",
        "",
        f"- Command (repository root): `{command}`",
        f"- Date: {started.isoformat(timespec='seconds')}",
        f"- Machine: {machine_description(args.threads[0])}",
        f"- Load average (1/5/15 min) before / after: {load_before} | {load_after} (shared machine: wall times "
        "are noisy when others run)",
        "- Problem: the (B, E, L, N) in the table, float32, Mamba-1 semantics with D, delta > 0 given; loss sum(y^2). "
        f"Our scan: chunk_size = {DEFAULT_CHUNK_SIZE}, group_chunks = {DEFAULT_GROUP_CHUNKS}, "
        f"num_threads = {DEFAULT_NUM_THREADS} (defaults: the scan itself runs with that many intra-op threads, "
        "whatever the process setting in the threads column).",
        f"- Time: wall clock, best of {args.reps} runs, at {' and '.join(map(str, args.threads))} threads "
        f"(`torch.set_num_threads`); ¹ = a single run (the sequential scan at L >= {args.seq_once_from:,}, "
        f"at {args.threads[0]} threads only).",
        "- Memory: peak of live tensor bytes allocated during forward + backward, inputs excluded, summed from "
        f"torch.profiler allocation/free events (`profile_memory=True`) in a separate run at {args.threads[0]} "
        "threads. (extrap.) = linear extrapolation from the two shorter lengths (that run is allowed only once, "
        "and it is timed).",
        f"- OpenMP: OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset)')} (this script defaults it to "
        "PASSIVE: on a shared, oversubscribed 2-core machine idle OpenMP workers that spin steal the CPU from the "
        "main thread, which made every method several times slower at 2 threads; set OMP_WAIT_POLICY yourself, e.g. "
        "ACTIVE, to measure another policy).",
        "- CPU time: process time (all threads) of forward + backward, the minimum over runs, like the wall times.",
        "- Last column: max abs difference of the output from the sequential scan (float32).",
        "- numba fused: `scripts.networks.selective_scan_numba` (one compiled forward and one backward kernel; its "
        "worker threads follow the threads column).",
        *([f"- {compile_txt}"] if compile_txt else []),
        *[f"- {n}" for n in args.note],
        "",
        table,
        "",
        *(
            ["## One `small` 128² batch-8 training step (sum over its 28 scan calls)", "", summary, ""]
            if summary
            else []
        ),
        f"![time and memory]({png.name})",
    ]
    if tune_txt:
        md += ["", "## Tuning of the chunked scan", "", tune_txt]
    (args.out / f"{stem}.md").write_text("\n".join(md) + "\n")
    print(f"\nwrote {args.out / f'{stem}.md'} and {png}")


if __name__ == "__main__":
    main()
