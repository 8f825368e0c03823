"""Per-iteration, per-module gradient norms of a quality-benchmark training run: where a divergence starts.

Runs ``benchmarks/bench_quality.py`` with the given arguments, unchanged, and attaches one more handler to the
bundle's ``VLDUNTrainer``: after every optimiser step it records which batch it was (with or without the
measurements, i.e. whether ``measurement_dropout`` made it blind), the largest ``|restored|``, every loss term, and
the gradient norm of each top-level module (each unfolding stage and each DC cascade on its own). One ``D it ...``
line per iteration goes to stdout (the four largest gradients), and everything to ``--trace-out`` as JSON.
``--stop-at N`` ends training after N iterations (the learning-rate schedule is still laid out over the benchmark's
``--iterations``, so the first N steps are those of the full run); the benchmark then evaluates and writes its
results as usual. ``--summarize LOG ...`` prints a table per 25 iterations of such logs instead.

Example (the DC VL-DUN run whose restoration spiked, 2026-12-06)::

    python benchmarks/trace_grads.py --stop-at 110 --trace-out /tmp/trace.json -- \\
        --datasets acdc_8x --split validation --train-seed 1 --threads 1 --methods vldun_dc \\
        --set dc_cascades=4 --set 'dc_cascade_features=[32,32,64,128,256,32]' \\
        --set 'seg_norm=["instance",{"affine":true}]' --set seg_decoder=unet --out-dir /tmp/val --tag trace
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

_REPO = Path(__file__).resolve().parents[1]
for _p in (str(_REPO / "bundle"), str(_REPO)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import torch  # noqa: E402


def module_group(name: str) -> str:
    """``stages.enc1.amgdm.step_size`` -> ``stages.enc1``; ``dc_cascades.blocks.0...`` -> ``dc_cascades.blocks.0``;
    anything else -> its top-level module."""
    parts = name.split(".")
    if parts[0] == "stages":
        return ".".join(parts[:2])
    if parts[0] == "dc_cascades":
        return ".".join(parts[:3])
    return parts[0]


def grad_norms(net: torch.nn.Module) -> dict[str, float]:
    """The gradient norm of each :func:`module_group` (parameters without a gradient are left out)."""
    sq: dict[str, float] = {}
    for n, p in net.named_parameters():
        if p.grad is not None:
            g = module_group(n)
            sq[g] = sq.get(g, 0.0) + float(p.grad.detach().float().pow(2).sum())
    return {k: v**0.5 for k, v in sq.items()}


class GradTrace:
    """The handler: attach to a trainer whose network is called as ``network(image, **measurements)``."""

    def __init__(self, stop_at: int | None, out: Path | None) -> None:
        self.stop_at, self.out = stop_at, out
        self.records: list[dict[str, Any]] = []
        self._measured: bool | None = None

    def attach(self, engine) -> None:
        from ignite.engine import Events

        def pre(_module, _args, kwargs):
            self._measured = kwargs.get("kspace") is not None

        engine.network.register_forward_pre_hook(pre, with_kwargs=True)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    def __call__(self, engine) -> None:
        out = engine.state.output if isinstance(engine.state.output, dict) else {}
        restored = out.get("restored")
        losses = {
            str(k): float(v.detach() if torch.is_tensor(v) else v) for k, v in out.items() if str(k).startswith("loss")
        }
        rec = {
            "iteration": engine.state.iteration,
            "measured": self._measured,
            "restored_max": float(restored.detach().abs().max()) if torch.is_tensor(restored) else None,
            "losses": losses,
            "grad_norms": grad_norms(engine.network),
        }
        self.records.append(rec)
        top = sorted(rec["grad_norms"].items(), key=lambda kv: -kv[1])[:4]
        print(
            f"D it {rec['iteration']} meas {rec['measured']} rmax {rec['restored_max'] or 0:.3g} "
            + " ".join(f"{k}={v:.4g}" for k, v in losses.items())
            + " top "
            + " ".join(f"{k}={v:.3g}" for k, v in top),
            flush=True,
        )
        if self.stop_at is not None and rec["iteration"] >= self.stop_at:
            engine.terminate()  # main() saves the records once the benchmark returns, or fails

    def save(self) -> None:
        if self.out is not None:
            self.out.parent.mkdir(parents=True, exist_ok=True)
            self.out.write_text(json.dumps(self.records))


_LINE = re.compile(r"^D it (\d+) meas (True|False|None) rmax (\S+) (.*?) ?top (.*)$")


def parse_log(lines: Iterable[str]) -> list[dict[str, Any]]:
    """The ``D it ...`` lines of a log (other lines are skipped) as records like those of ``--trace-out`` (only the
    four largest gradient norms of each iteration)."""
    out = []
    for line in lines:
        m = _LINE.match(line.strip())
        if not m:
            continue
        pairs = [kv.split("=", 1) for kv in m.group(4).split() + m.group(5).split() if "=" in kv]
        out.append(
            {
                "iteration": int(m.group(1)),
                "measured": {"True": True, "False": False}.get(m.group(2)),
                "losses": {k: float(v) for k, v in pairs if k.startswith("loss")},
                "grad_norms": {k: float(v) for k, v in pairs if not k.startswith("loss")},
            }
        )
    return out


def summarize(records: list[dict[str, Any]], window: int = 25) -> str:
    """A markdown table per ``window`` iterations: blind batches, the largest rec-head gradient on blind and on
    measured batches, the largest gradient of any module, and the restoration loss (mean, and largest on a blind
    batch) where the records have it. From log records a gradient outside an iteration's four largest counts 0."""
    rows = [
        "| iterations | blind batches | max rec-head grad, blind / measured | max grad, any module | "
        "loss_rec mean / max on a blind batch |",
        "|---|---|---|---|---|",
    ]

    def peak(rs: list[dict[str, Any]]) -> float:
        return max((r["grad_norms"].get("rec_head", 0.0) for r in rs), default=0.0)

    for lo in range(0, len(records), window):
        win = records[lo : lo + window]
        blind = [r for r in win if r["measured"] is False]
        measured = [r for r in win if r["measured"]]
        top = max((max(r["grad_norms"].values(), default=0.0) for r in win), default=0.0)
        rec = [r["losses"]["loss_rec"] for r in win if "loss_rec" in r["losses"]]
        rec_blind = [r["losses"]["loss_rec"] for r in blind if "loss_rec" in r["losses"]]
        loss = f"{sum(rec) / len(rec):.4f} / {max(rec_blind):.4f}" if rec and rec_blind else "–"
        rows.append(
            f"| {win[0]['iteration']}-{win[-1]['iteration']} | {len(blind)} | {peak(blind):.3g} / "
            f"{peak(measured):.3g} | {top:.3g} | {loss} |"
        )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    bench_args = argv[argv.index("--") + 1 :] if "--" in argv else []
    own = argv[: argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(prog="python benchmarks/trace_grads.py", description=__doc__.split("\n")[0])
    p.add_argument("--stop-at", type=int, default=None, help="end training after this many iterations")
    p.add_argument("--trace-out", type=Path, default=None, help="JSON file for the per-iteration records")
    p.add_argument("--summarize", type=Path, nargs="+", help="print a table per 25 iterations of these logs and stop")
    args = p.parse_args(own)
    if args.summarize:
        for path in args.summarize:
            print(f"{path.name}\n\n{summarize(parse_log(path.read_text().splitlines()))}\n")
        return 0
    trace = GradTrace(args.stop_at, args.trace_out)

    import scripts.workflows.engines as engines

    base = engines.VLDUNTrainer

    class TracedTrainer(base):  # the benchmark builds its trainer by this name (quality/recipe.py)
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            trace.attach(self)

    from benchmarks import bench_quality

    engines.VLDUNTrainer = TracedTrainer
    try:
        return bench_quality.main(bench_args)
    finally:
        engines.VLDUNTrainer = base
        trace.save()


if __name__ == "__main__":
    sys.exit(main())
