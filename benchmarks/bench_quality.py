"""Quality on real data: VL-DUN joint restoration + segmentation against baselines, and the paper's ablations.

Follows ``../shared/design/benchmark-protocol.md``: protocol splits, resize to S x S (bilinear + anti-aliasing /
nearest), per-slice min-max, a fresh random k-space mask per training sample and one fixed mask per test slice
from ``sample_seed(global seed, dataset, slice index)``, PSNR/SSIM with scikit-image conventions (data_range 1,
7 x 7 window, outputs clipped to [0, 1]), Dice/IoU per class per slice after argmax (a class absent from both
ground truth and prediction is skipped on that slice; a false positive on a slice without the class counts 0).

Methods (``--methods``; ``baselines``, ``ablations`` and ``all`` are groups):

==================== ==================================================================================
zero_filled          the degraded input itself (no learning)
rec_unet             MONAI BasicUNet, output = input + residual (the recipe's restoration term)
seg_unet_degraded    BasicUNet segmentation on the degraded input (the recipe's segmentation term)
seg_unet_clean       BasicUNet segmentation on the clean input (upper bound; tested on clean images)
sequential           rec_unet (as trained above) then a BasicUNet segmentation trained on its outputs
vldun                VL-DUN joint, built by train.json's ``network_def`` (``--preset``, default the config's)
vldun_no_clip        ablations (paper Table 3), same training as ``vldun`` with one switch of VLDUN changed:
vldun_frozen_clip      use_clip_prior=False / tune_clip=False / freq_decouple=False / seg_head=False /
vldun_no_fd            rec_head=False
vldun_no_seg
vldun_no_rec
varnet               known operator: single-coil VarNet, ``--varnet-cascades`` MONAI VarNetBlocks with ComplexUnet
                     refinements of ``--unet-features`` widths, soft data consistency on the measured k-space
vldun_dc             known operator: ``vldun`` with ``data_consistency=True`` (exact k-space gradient steps and a
                     hard DC projection, ``--set dc_projection=soft`` for the learned one); group ``known``
==================== ==================================================================================

Every learned method gets the same budget and the same recipe: ``--iterations`` optimiser steps of batch
``--batch-size`` (random flips, last iterate), optionally capped by ``--time-budget`` seconds, trained by the bundle's
``VLDUNTrainer`` with the loss, optimiser and warm-up + cosine schedule that ``bundle/configs/train.json`` declares
(``quality/recipe.py``; the schedule is laid out over the run's iterations). ``--set KEY=VALUE`` changes a value of that
config (``--set lambda_rec=3``, ``--set network_def#use_clip_prior=false``) exactly as ``monai.bundle run training --KEY
VALUE`` would, so a number here is what a user of ``train.json`` gets. The UNets are wrapped to return the same dict as
VL-DUN and train with the same ``VLDUNLoss`` (the terms they have). The wall-clock time of each is reported separately.
``--split validation`` evaluates on every 5th training patient instead of the test patients (choose settings there);
``--grad-probe N`` records the restoration and segmentation gradient norms on VL-DUN's shared trunk every N iterations.
The sequential pipeline's segmentation network gets the same iterations on top of the restoration network it reuses (its
reported time is the sum). ``--device cuda`` trains and evaluates on a GPU (float32, as on the CPU; the device and GPU
name are recorded, and seeds aggregate only with runs of the same ``--device``); e.g. the 256-px protocol on a lent GPU:
``--device cuda --size 256 --iterations 1200``.

Results: ``<out-dir>/quality_<tag>.json`` (every method's summary, per-slice metrics and training ``trace``: each
loss term and, when ``grad_clip_norm`` is set, the pre-clip gradient norm per iteration; a later run with the
same tag adds or replaces methods), ``quality_<tag>.md`` (tables, machine, date, exact commands) and
``quality_<tag>.png``. Data: ``--datasets`` takes the shared settings ``acdc_8x``, ``acdc_4x``, ``covid_60``
(found under ``--data-root``, default ``../shared/data`` next to the repository; skipped cleanly when absent) or
``PATH`` / ``PATH@DEGRADATION`` for any prepared dataset: a 2D slice folder (``images/`` + ``labels/``) or a
datalist JSON from ``scripts.data.prepare`` (NIfTI volumes are sliced). DEGRADATION is ``cartesian:ACC:CF`` or
``radial:SPOKES`` (default from the modality: MRI ``cartesian:8:0.04``, CT ``radial:60``).

Defaults: the *ranking budget*, 128 px, batch 8, 300 iterations per learned method: the smallest budget at which
the restoration UNet beats the zero-filled input by at least 0.8 dB on ACDC 8x, measured on the validation split
(150 iterations: +0.17 dB; 300: +0.88 dB; ``results/quality_acdc_8x_s128_it{150,300}_val.md``). On the 2-core
CPU one UNet takes ~5 minutes there and VL-DUN ``small`` ~25-35 minutes (4-7 s per iteration). The protocol's own
budget is ``--iterations 1200`` (labelled *protocol budget*). Examples::

    python benchmarks/bench_quality.py --datasets acdc_8x --methods baselines vldun
    python benchmarks/bench_quality.py --datasets acdc_8x --split validation --methods vldun --set lambda_rec=30

Results files can be combined afterwards: ``--aggregate OUT.md A.json B.json ...`` summarises runs that differ only
in ``--train-seed`` (spread over seeds, claims per seed and over the seeds with seed and patient both random);
``--compare OUT.md METHOD A0.json,B0.json A1.json,B1.json ...`` compares one method trained two ways (one pair of
runs per training seed), per seed and over the seeds; ``--merge OUT.json A.json B.json:m1,m2 ...`` puts methods of
runs on the same test set and recipe but with different iteration counts or caps into one table with paired claims
(e.g. VL-DUN capped by wall-clock next to UNets at the same number of iterations; ``:m1,m2`` takes only those rows of
a file); ``--render JSON`` redraws one file.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

_REPO = Path(__file__).resolve().parents[1]
for _p in (str(_REPO / "bundle"), str(_REPO)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import torch  # noqa: E402

from benchmarks._slices import load_slices, validation_split  # noqa: E402
from benchmarks.quality.combine import (  # noqa: E402
    merge_runs,
    parse_merge_source,
    render_comparison,
    render_seed_summary,
    select_methods,
)
from benchmarks.quality.degradation import (  # noqa: E402
    DEFAULT_DEGRADATION,
    SETTINGS,
    Degradation,
    make_test_inputs,
    parse_degradation,
)
from benchmarks.quality.methods import ABLATIONS, BASELINES, KNOWN_OPERATOR, METHODS, Runner  # noqa: E402
from benchmarks.quality.metrics import dice_iou_per_class, psnr_ssim, summarize  # noqa: E402
from benchmarks.quality.recipe import TRAIN_CONFIG, Recipe, parse_overrides  # noqa: E402
from benchmarks.quality.report import machine, plot, render_markdown  # noqa: E402

__all__ = [
    "ABLATIONS",
    "BASELINES",
    "DEFAULT_DATA_ROOT",
    "METHODS",
    "SETTINGS",
    "Degradation",
    "dice_iou_per_class",
    "main",
    "make_test_inputs",
    "parse_degradation",
    "psnr_ssim",
    "summarize",
]

DEFAULT_DATA_ROOT = _REPO.parent / "shared" / "data"


# ------------------------------------------------------------------------------------------------ CLI
def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python benchmarks/bench_quality.py",
        description="VL-DUN vs baselines and ablations on real data (benchmark protocol).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--datasets",
        nargs="+",
        default=["acdc_8x", "acdc_4x", "covid_60"],
        help=f"settings {sorted(SETTINGS)} under --data-root, or PATH[@DEGRADATION] of a slice folder / datalist",
    )
    p.add_argument("--data-root", default=str(DEFAULT_DATA_ROOT), help="shared data folder (../shared/data)")
    p.add_argument("--methods", nargs="+", default=["all"], help=f"{list(METHODS)} or baselines/ablations/all")
    # defaults: the budget that fits in about an hour per dataset on a 2-core CPU with all 11 methods (VL-DUN
    # `small` costs ~2 s per iteration there); the protocol's figures need --size 128 --batch-size 8 --iterations 1200
    p.add_argument("--size", type=int, default=128, help="slice size S (protocol: 128 on CPU, 256 on a GPU)")
    p.add_argument("--iterations", type=int, default=300, help="optimiser steps per learned method")
    p.add_argument("--time-budget", type=float, default=None, help="wall-clock cap in seconds per learned method")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--eval-batch", type=int, default=8)
    p.add_argument("--seed", type=int, default=0, help="global seed (test-mask seeds; training too by default)")
    p.add_argument("--train-seed", type=int, default=None, help="seed of initialisation, batches, training masks")
    p.add_argument("--preset", default=None, help="VL-DUN preset (default: train.json's; tiny for smoke tests)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a value of the training config (JSON value): a top-level key (--set lambda_rec=3) or an id "
        "into a section (--set network_def#use_clip_prior=false); repeatable",
    )
    p.add_argument("--config", default=str(TRAIN_CONFIG), help="training config whose recipe is used (train.json)")
    p.add_argument(
        "--split",
        choices=("test", "validation"),
        default="test",
        help="evaluate on the protocol's test patients, or on every 5th training patient held out (choose settings)",
    )
    p.add_argument("--grad-probe", type=int, default=0, help="every N iterations: VL-DUN task gradient norms (0: off)")
    p.add_argument("--scan-chunk", type=int, default=None, help="VL-DUN selective-scan chunk size (default: its own)")
    p.add_argument("--unet-features", type=lambda s: [int(v) for v in s.split(",")], default=[32, 32, 64, 128, 256, 32])
    p.add_argument("--varnet-cascades", type=int, default=4, help="VarNetBlocks of the varnet baseline")
    p.add_argument("--modality", default=None, help="MRI|CT for a slice folder that is not a shared set")
    p.add_argument("--preset-data", default=None, help="scripts.data.prepare SLICE_PRESETS entry for a slice folder")
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (1)")
    p.add_argument(
        "--device",
        default="cpu",
        help="where the methods train and run: cpu (the protocol's tables) or cuda / cuda:N (a lent GPU; recorded "
        "in the results: seeds aggregate only with runs of the same --device)",
    )
    p.add_argument("--out-dir", default=str(_REPO / "benchmarks" / "results"))
    p.add_argument("--tag", default=None, help="results file tag (default: <setting>_s<size>_it<iterations>)")
    p.add_argument("--budget-label", default=None, help="label printed on the results (e.g. 'reduced budget')")
    p.add_argument("--log-every", type=int, default=25)
    p.add_argument("--render", default=None, metavar="JSON", help="only re-render the .md/.png of a results JSON")
    p.add_argument(
        "--aggregate",
        nargs="+",
        default=None,
        metavar="FILE",
        help="OUT.md JSON JSON...: summarise runs that differ only in --train-seed",
    )
    p.add_argument(
        "--compare",
        nargs="+",
        default=None,
        metavar="ARG",
        help="OUT.md METHOD A.json,B.json [A.json,B.json ...]: METHOD trained two ways (A, B), one pair per training "
        "seed: A − B per seed and over the seeds",
    )
    p.add_argument(
        "--merge",
        nargs="+",
        default=None,
        metavar="FILE",
        help="OUT.json JSON[:m1,m2] ...: one table from runs on the same test set and recipe (iterations may differ;"
        " ':m1,m2' takes only those methods of a file)",
    )
    return p


def _expand_methods(tokens: Sequence[str]) -> list[str]:
    out: list[str] = []
    for t in tokens:
        group = {
            "all": METHODS,
            "baselines": BASELINES,
            "ablations": ("vldun",) + ABLATIONS,
            "known": KNOWN_OPERATOR,
        }.get(t)
        for m in group or (t,):
            if m not in METHODS:
                raise SystemExit(f"unknown method {m!r}; choose from {list(METHODS)} or baselines/ablations/known/all")
            if m not in out:
                out.append(m)
    return out


def _resolve(entry: str, data_root: Path) -> tuple[str, Path, str | None, bool]:
    """(setting name, source path, degradation spec or None, is_shared_setting)."""
    if entry in SETTINGS:
        folder, deg = SETTINGS[entry]
        return entry, data_root / folder, deg, True
    path, _, deg = entry.partition("@")
    return Path(path).name.split(".")[0], Path(path), deg or None, False


def run_dataset(entry: str, methods: list[str], args: argparse.Namespace, command: str) -> Path | None:
    setting, src, deg_spec, shared = _resolve(entry, Path(args.data_root))
    if not src.exists():
        msg = f"{entry}: {src} not found"
        if shared:
            print(f"SKIP {msg} (the shared data are optional; pass --data-root)", flush=True)
            return None
        raise SystemExit(f"error: {msg}")
    t_load = time.perf_counter()
    data = load_slices(src, args.size, preset=args.preset_data, modality=args.modality)
    if args.split == "validation":
        data = validation_split(data)
    overrides = parse_overrides(args.overrides)
    if args.preset:
        overrides["preset"] = args.preset
    recipe = Recipe(overrides, args.config, device=args.device)
    deg = parse_degradation(deg_spec or DEFAULT_DEGRADATION.get(data.modality.split("/")[0], "cartesian:8:0.04"))
    print(
        f"== {setting}: {data.name} ({data.modality}), train {len(data.train)} / test {len(data.test)} slices at "
        f"{args.size}px, classes {data.class_names}, {deg.describe()} (loaded in {time.perf_counter() - t_load:.0f} s)",
        flush=True,
    )
    tag = args.tag or f"{setting}_s{args.size}_it{args.iterations}" + ("_val" if args.split == "validation" else "")
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    jpath = out_dir / f"quality_{tag}.json"
    config = {
        "size": args.size,
        "iterations": args.iterations,
        "time_budget": args.time_budget,
        "batch_size": args.batch_size,
        "seed": args.seed,
        "train_seed": args.seed if args.train_seed is None else args.train_seed,
        "preset": recipe.value("preset"),
        "recipe": recipe.describe(),
        "split": args.split,
        "grad_probe": args.grad_probe,
        "unet_features": list(args.unet_features),
        "varnet_cascades": args.varnet_cascades,
        "threads": args.threads,
        "scan_chunk": args.scan_chunk,
    }
    if args.device != "cpu":  # CPU results files keep the configuration they always had
        config["device"] = args.device
    try:
        from scripts.networks import PRESETS

        vldun_cfg = dict(PRESETS.get(config["preset"], {}))
    except ImportError:
        vldun_cfg = {}
    res: dict[str, Any] | None = None
    if jpath.is_file():
        old = json.loads(jpath.read_text())
        if old.get("config") == config and old.get("degradation") == deg.spec() and old.get("dataset") == data.name:
            res = old
        else:
            print(f"  {jpath.name} holds another configuration: it is replaced", flush=True)
    if res is None:
        res = {"methods": {}, "commands": []}
    budget = args.budget_label or (
        "protocol budget"
        if args.size >= 128 and args.iterations >= 1200
        else "ranking budget (128 px, batch 8, 300 iterations: the restoration UNet beats zero-filled by >= 0.8 dB)"
        if (args.size, args.batch_size, args.iterations) == (128, 8, 300)
        else "reduced budget (CPU, below the ranking budget)"
        if args.size < 128 or args.iterations < 300
        else "custom budget"
    )
    res.update(
        title=f"{setting} ({deg.spec()}), {args.size}px, {args.iterations} iterations",
        budget_label=budget,
        dataset=data.name,
        source=str(src),
        modality=data.modality,
        class_names=data.class_names,
        train_slices=len(data.train),
        test_slices=len(data.test),
        test_ids=list(data.test.ids),
        test_groups=list(data.test.groups),
        degradation=deg.spec(),
        degradation_text=deg.describe(),
        config=config,
        vldun_preset_config=vldun_cfg,
        machine=machine(args.device),
    )
    runner = Runner(data, deg, args, recipe)
    t_all = time.perf_counter()
    for m in methods:
        t = time.perf_counter()
        print(f"-- {m}", flush=True)
        r = runner.run(m)
        r["date"] = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        res["methods"][m] = r
        if m == "sequential" and r.get("rec_trained_here"):
            pass  # its restoration network is reported inside the sequential row
        summary = ", ".join(f"{k} {r[k]:.3f}" for k in ("psnr_mean", "ssim_mean", "dice_mean", "iou_mean") if k in r)
        print(f"   {m}: {summary} ({time.perf_counter() - t:.0f} s)", flush=True)
        _write(res, jpath, command, methods, t_all, partial=True)
    _write(res, jpath, command, methods, t_all, partial=False)
    print(f"results: {jpath.with_suffix('.md')}", flush=True)
    return jpath.with_suffix(".md")


def _write(res, jpath: Path, command: str, methods, t_all: float, partial: bool) -> None:
    entry = {
        "command": command,
        "methods": list(methods),
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "seconds": time.perf_counter() - t_all,
        "complete": not partial,
    }
    cmds = [c for c in res["commands"] if not (c["command"] == command and not c.get("complete", True))]
    res["commands"] = cmds + [entry]
    _save(res, jpath)


def _save(res: dict[str, Any], jpath: Path) -> None:
    """Write a results dict as ``jpath`` (JSON) with its plot and markdown beside it."""
    png = jpath.with_suffix(".png")
    res["plot"] = png.name if plot(res, png) else None
    jpath.write_text(json.dumps(res, indent=1, default=float) + "\n")
    jpath.with_suffix(".md").write_text(render_markdown(res))


def _check_device(device: str) -> None:
    """Stop with a message for a device this machine does not have (before any data are loaded)."""
    try:
        dev = torch.device(device)
    except RuntimeError as e:
        raise SystemExit(f"--device: {e}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {device}: torch {torch.__version__} sees no CUDA GPU on this machine; use cpu")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise SystemExit(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA GPU(s)")
    if dev.type not in ("cpu", "cuda"):
        raise SystemExit(f"--device {device}: the benchmark runs on cpu or cuda")


def _load_results(path: Path) -> dict[str, Any]:
    try:
        res = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise SystemExit(f"{path}: not a readable results JSON ({e})") from None
    if not isinstance(res, dict) or not {"config", "methods", "dataset"} <= res.keys():
        raise SystemExit(f"{path}: not a bench_quality results file (no config / methods / dataset)")
    return res


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.aggregate:
        out, *files = args.aggregate
        try:
            md = render_seed_summary([_load_results(Path(f)) for f in files], [Path(f).name for f in files])
        except ValueError as e:
            raise SystemExit(f"--aggregate: {e}") from None
        Path(out).write_text(md)
        print(f"wrote {out}")
        return 0
    if args.compare:
        if len(args.compare) < 3:
            raise SystemExit("--compare: OUT.md METHOD A.json,B.json [A.json,B.json ...]")
        out, method, *pair_args = args.compare
        files = [tuple(Path(f) for f in arg.split(",")) for arg in pair_args]
        if any(len(f) != 2 for f in files):
            raise SystemExit(f"--compare: each pair is A.json,B.json, got {pair_args}")
        try:
            md = render_comparison(
                [(_load_results(a), _load_results(b)) for a, b in files],
                [f"{a.name} / {b.name}" for a, b in files],
                method,
            )
        except ValueError as e:
            raise SystemExit(f"--compare: {e}") from None
        Path(out).write_text(md)
        print(f"wrote {out}")
        return 0
    if args.merge:
        out = Path(args.merge[0])
        if out.suffix != ".json":
            raise SystemExit(f"--merge: the first path is the output and must end in .json, got {out}")
        try:
            sources = [parse_merge_source(f) for f in args.merge[1:]]
            res = merge_runs(
                [select_methods(_load_results(f), methods, f.name) for f, methods in sources],
                [f.name for f, _ in sources],
                args.budget_label or "merged runs (see the setup for each run's budget)",
            )
        except ValueError as e:
            raise SystemExit(f"--merge: {e}") from None
        _save(res, out)
        print(f"wrote {out.with_suffix('.md')}")
        return 0
    if args.render:
        jpath = Path(args.render)
        res = _load_results(jpath)
        if "test_groups" not in res and Path(res.get("source", "")).exists():  # results of an older version
            d = load_slices(res["source"], 8, preset=args.preset_data, modality=args.modality)
            if len(d.test) == res["test_slices"]:
                res["test_ids"], res["test_groups"] = list(d.test.ids), list(d.test.groups)
        _save(res, jpath)
        print(f"rendered {jpath.with_suffix('.md')}")
        return 0
    torch.set_num_threads(max(1, args.threads))
    _check_device(args.device)
    methods = _expand_methods(args.methods)
    argv_list = list(sys.argv[1:] if argv is None else argv)
    command = "python benchmarks/bench_quality.py " + " ".join(shlex.quote(a) for a in argv_list)
    for entry in args.datasets:
        run_dataset(entry, methods, args, command)
    return 0


if __name__ == "__main__":
    sys.exit(main())
