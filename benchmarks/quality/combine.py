"""Results of several runs in one view: ``render_seed_summary`` (runs that differ only in the training seed: spread
over seeds and the paired claims per seed), ``render_comparison`` (one method trained two ways, over seeds) and
``merge_runs`` (runs on the same test set and recipe with different iteration counts or wall-clock caps, as one
table with paired claims).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.quality.methods import METHOD_LABELS, METHODS
from benchmarks.quality.metrics import _paired, _paired_over_seeds
from benchmarks.quality.report import (
    CLAIMS,
    GAP_NOTE,
    _claim_values,
    _difference_text,
    _recipe_text,
    dice_gap_closed,
)
from scripts.networks.heads import SEG_UNET_FEATURES
from scripts.networks.presets import PRESETS

__all__ = ["merge_runs", "render_comparison", "render_seed_summary"]


_OVER_SEEDS_NOTE = (
    "*Over the seeds*: the mean of A − B over every seed and test patient with a 95 % interval in which both the "
    "training seed and the patient are random (two-way ANOVA of the seed × patient table, Satterthwaite's degrees "
    "of freedom): what a new training run on new patients is expected to show."
)


def render_seed_summary(results: Sequence[Mapping[str, Any]], sources: Sequence[str]) -> str:
    """Markdown of several runs that differ only in the training seed: per-method mean ± std over seeds of the
    test-set means, and per claim the paired difference of every seed with its patient-level 95% interval and the
    difference over all seeds with an interval in which seed and patient are both random (``_paired_over_seeds``).

    A claim is *supported* when every seed shows A > B with an interval excluding 0, *contradicted* when every seed
    shows A < B likewise, and *undecided* otherwise.
    """
    if not results:
        raise ValueError("no results to aggregate")
    _check_differ_only_in_seed(results, "the runs to aggregate")
    ref = results[0]
    seeds = [_train_seed(r) for r in results]
    methods = [m for m in METHODS if any(m in r["methods"] for r in results)]
    cfg = ref["config"]
    lines = [
        f"# Quality benchmark over training seeds: {ref['title']}",
        "",
        f"**{ref['budget_label']}**",
        "",
        f"Aggregated by `python benchmarks/bench_quality.py --aggregate` from {', '.join(f'`{s}`' for s in sources)} "
        f"(training seeds {seeds}; everything else identical: same test slices and test masks, size {cfg['size']}, "
        f"batch {cfg['batch_size']}, {cfg['iterations']} iterations, {_recipe_text(cfg)}). Setup, machine and the "
        "exact commands are in those files.",
        "",
        "## Test-set means, mean ± std over training seeds (n = seeds)",
        "",
        "| method | n | PSNR (dB) | SSIM | mean Dice | mean IoU |",
        "|---|---|---|---|---|---|",
    ]

    def rows(m: str, blind: bool) -> list[Mapping[str, Any]]:
        found = [r["methods"][m] for r in results if m in r["methods"]]
        return [f["blind"] for f in found if f.get("blind")] if blind else found

    def over_seeds(m: str, key: str, digits: int, blind: bool = False) -> str:
        v = [row[key] for row in rows(m, blind) if key in row]
        if not v:
            return "–"
        return f"{np.mean(v):.{digits}f} ± {np.std(v, ddof=1) if len(v) > 1 else 0.0:.{digits}f}"

    for m in methods:
        # a known-operator network's second evaluation without k-space and mask is a row of its own
        for blind in (False, True):
            n = len(rows(m, blind))
            if blind and not n:
                continue
            label = f"{METHOD_LABELS.get(m, m)} (`{m}`)" + (
                ", the same weights without the measurements" if blind else ""
            )
            cells = [
                over_seeds(m, k, d, blind)
                for k, d in (("psnr_mean", 2), ("ssim_mean", 3), ("dice_mean", 3), ("iou_mean", 3))
            ]
            lines.append(f"| {label} | {n} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "## Claims: A − B per seed (patient-level 95% interval, as in the per-run files)",
        "",
        "*supported*: A > B with an interval excluding 0 in every seed; *contradicted*: A < B likewise; "
        f"otherwise *undecided*. {_OVER_SEEDS_NOTE} The per-seed intervals see the patients only.",
        "",
        "| claim | A | B | " + " | ".join(f"seed {s}" for s in seeds) + " | over the seeds | verdict |",
        "|---|---|---|" + "---|" * len(seeds) + "---|---|",
    ]
    for text, a, b, key in CLAIMS:
        values = [_claim_values(r["methods"], a, b, key) for r in results]
        per_seed, pooled = _per_seed_and_over_seeds(
            [None if v is None else (*v, r.get("test_groups")) for v, r in zip(values, results)]
        )
        signs = [None if p is None else 1 if p[0] - p[1] > 0 else -1 if p[0] + p[1] < 0 else 0 for p in per_seed]
        if all(x is None for x in signs):
            continue
        done = [x for x in signs if x is not None]
        verdict = (
            "supported"
            if all(x == 1 for x in done)
            else "contradicted"
            if all(x == -1 for x in done)
            else ("undecided")
        )
        if len(done) < len(signs):
            verdict += f" ({len(done)} of {len(signs)} seeds)"
        cells = [_difference_text(p) for p in (*per_seed, pooled)]
        lines.append(f"| {text} | `{a}` | `{b}` | " + " | ".join(cells) + f" | {verdict} |")
    closed = [dice_gap_closed(r["methods"]) for r in results]
    if any(closed):
        lines += ["", "## Dice gap closed, per seed", "", GAP_NOTE, ""]
        lines += ["| method | " + " | ".join(f"seed {s}" for s in seeds) + " |", "|---|" + "---|" * len(seeds)]
        for m in methods:
            if any(m in c for c in closed):
                lines.append(f"| `{m}` | " + " | ".join(f"{c[m]:+.0%}" if m in c else "–" for c in closed) + " |")
    return "\n".join(lines) + "\n"


def _train_seed(result: Mapping[str, Any]) -> Any:
    return result["config"].get("train_seed", result["config"]["seed"])


def _seedless_config(result: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in _normalised_config(result["config"]).items() if k != "train_seed"}


def _check_differ_only_in_seed(results: Sequence[Mapping[str, Any]], what: str) -> None:
    ref, ref_config = results[0], _seedless_config(results[0])
    for r in results[1:]:
        if any(r[k] != ref[k] for k in ("dataset", "degradation")) or _seedless_config(r) != ref_config:
            raise ValueError(f"{what} must differ only in their training seed")


def _per_seed_and_over_seeds(
    runs: Sequence[tuple[Sequence, Sequence, Sequence[str] | None] | None],
) -> tuple[list[tuple[float, float, int, int] | None], tuple[float, float, int, int] | None]:
    """One comparison over seeds: each seed's ``_paired`` difference of its ``(a, b, groups)`` (``None`` where the
    seed has no data or too few patients), and ``_paired_over_seeds`` over the seeds that have one."""
    per_seed = [None if run is None else _paired(*run) for run in runs]
    return per_seed, _paired_over_seeds([run for run, p in zip(runs, per_seed) if p is not None])


def _config_differences(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[str]:
    """``key: A value / B value`` for every setting (recipe values included) in which two runs differ."""
    ca, cb = _seedless_config(a), _seedless_config(b)
    # the overrides are the recipe values themselves, already compared one by one
    ra, rb = ({k: v for k, v in (c.pop("recipe", None) or {}).items() if k != "overrides"} for c in (ca, cb))
    out = []
    for cfg_a, cfg_b in ((ca, cb), (ra, rb)):
        for k in sorted(set(cfg_a) | set(cfg_b)):
            if cfg_a.get(k) != cfg_b.get(k):
                out.append(f"`{k}`: {cfg_a.get(k, '–')} / {cfg_b.get(k, '–')}")
    return out


_COMPARED = (("PSNR (dB)", "psnr"), ("SSIM", "ssim"), ("mean Dice", "dice_per_slice"))


def render_comparison(
    pairs: Sequence[tuple[Mapping[str, Any], Mapping[str, Any]]], names: Sequence[str], method: str
) -> str:
    """Markdown comparing one method trained two ways (A and B: e.g. two values of one setting) over training seeds.

    ``pairs`` holds one ``(A, B)`` pair of results per training seed, the two of a pair with the same seed and test
    set; ``names`` the pairs' file names. Per metric, with the measurements and (where both runs recorded one) in
    the blind mode: A − B per seed with its patient-level 95% interval, and over the seeds with seed and patient both
    random (``_paired_over_seeds``). The settings in which A and B differ are listed from their configs.
    """
    if not pairs:
        raise ValueError("no pairs to compare")
    for i, side in enumerate(("A", "B")):
        _check_differ_only_in_seed([p[i] for p in pairs], f"the {side} runs")
    for (a, b), name in zip(pairs, names):
        same_test_set = all(a.get(k) == b.get(k) for k in ("dataset", "degradation", "test_ids"))
        if not same_test_set or _train_seed(a) != _train_seed(b):
            raise ValueError(f"{name}: the two runs of a pair must have the same training seed and test set")
        for side, r in (("A", a), ("B", b)):
            if method not in r["methods"]:
                raise ValueError(f"{name}: run {side} has no {method!r} row (it has {sorted(r['methods'])})")
    differ = _config_differences(pairs[0][0], pairs[0][1]) or ["nothing in the recorded settings"]
    seeds = [_train_seed(a) for a, _ in pairs]
    ref = pairs[0][0]
    lines = [
        f"# `{method}` trained two ways, over training seeds: {ref['title']}",
        "",
        f"Compared by `python benchmarks/bench_quality.py --compare` from {', '.join(f'`{n}`' for n in names)} "
        f"(A, B per training seed {seeds}). A and B differ in (A / B): {'; '.join(differ)}.",
        "",
        f"A − B per seed with its 95 % interval over the test patients. {_OVER_SEEDS_NOTE} *Blind mode*: the same "
        "weights evaluated without k-space and mask, for the seeds where both runs recorded it.",
        "",
        "| metric | mode | " + " | ".join(f"seed {s}" for s in seeds) + " | over the seeds |",
        "|---|---|" + "---|" * len(seeds) + "---|",
    ]
    for label, key in _COMPARED:
        for mode in ("measured", "blind"):
            runs = []
            for a, b in pairs:
                ra, rb = a["methods"][method], b["methods"][method]
                if mode == "blind":
                    ra, rb = ra.get("blind") or {}, rb.get("blind") or {}
                runs.append((ra[key], rb[key], a.get("test_groups")) if key in ra and key in rb else None)
            per_seed, pooled = _per_seed_and_over_seeds(runs)
            if all(p is None for p in per_seed):
                continue
            cells = [_difference_text(p) for p in per_seed]
            cells.append(_difference_text(pooled) + ("" if pooled is None else f" ({pooled[2]} seeds)"))
            lines.append(f"| {label} | {mode} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# Keys that must agree for rows of different runs to share one table: the test set, its masks and the training
# recipe. Iterations and the wall-clock cap may differ (that is the point of a merge); each row records its own.
_MERGE_KEYS = ("size", "batch_size", "lr", "seed", "train_seed", "preset", "lambda_prior", "unet_features", "recipe")


#: recipe values that only act on a network returning the features both heads read (VL-DUN), or only on the
#: known-operator methods (measurement_dropout): the other rows of a run trained under one value are the same
#: computation under the other, so runs may differ in them
_VLDUN_ONLY_RECIPE_KEYS = (
    "task_balance",
    "seg_hidden",
    "seg_norm",
    "seg_decoder",
    "seg_unet_features",
    "seg_feature_grad",
    "measurement_dropout",
    "dc_projection",
    "dc_cascades",
    "dc_cascade_features",
    "dc_to_seg",
    "lambda_pre_dc",
)


#: recipe values that only act on a segmentation loss or a segmentation network, and the methods that train none
#: (restoration only): a run of nothing but these methods is the same computation under any value, so it merges with
#: runs that set one
_SEG_RECIPE_KEYS = ("dice_ce_kwargs", "seg_unet_dropout")
_NO_SEG_LOSS_METHODS = frozenset({"zero_filled", "rec_unet", "varnet", "vldun_no_seg"})


# recipe keys recorded only since they became train.json knobs: a file written before them trained with these values
_RECIPE_DEFAULTS: dict[str, Any] = {
    "dice_ce_kwargs": {},
    "grad_clip_norm": None,
    "seg_norm": "batch",
    "seg_decoder": "conv",
    "seg_unet_features": list(SEG_UNET_FEATURES),
    "seg_feature_grad": 1.0,
    "seg_unet_dropout": 0.0,
    "lambda_pre_dc": 0.0,
}


def _normalised_recipe(recipe: Mapping[str, Any]) -> dict[str, Any]:
    """A recorded recipe with the keys older files lack filled in: defaults, and overridden values that were
    recorded only among the overrides (``dc_cascade_features`` before 2026-12-02 evening), and the preset's
    ``seg_hidden`` (recorded since 2026-12-03)."""
    out = {**_RECIPE_DEFAULTS, **recipe}
    for k, v in (recipe.get("overrides") or {}).items():
        out.setdefault(k, v)
    if "seg_hidden" not in out and out.get("preset") in PRESETS:  # the preset's width, before it was a knob
        out["seg_hidden"] = PRESETS[out["preset"]]["seg_hidden"]
    return out


def _normalised_config(config: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(config)
    if isinstance(out.get("recipe"), Mapping):
        out["recipe"] = _normalised_recipe(out["recipe"])
    return out


def _comparable(config: Mapping[str, Any], key: str, segments: bool = True) -> Any:
    """``config[key]`` as far as it decides the computation of a merged row; ``segments=False`` for a run whose
    methods train no segmentation loss (the segmentation-loss values then do not count)."""
    value = config.get(key)
    if key == "recipe" and isinstance(value, Mapping):
        ignored = _VLDUN_ONLY_RECIPE_KEYS + (() if segments else _SEG_RECIPE_KEYS)
        value = _normalised_recipe(value)
        out = {k: v for k, v in value.items() if k not in ignored}
        out["overrides"] = {k: v for k, v in (value.get("overrides") or {}).items() if k not in ignored}
        return out
    return value


def _segments(result: Mapping[str, Any]) -> bool:
    """The run has a row whose training used a segmentation loss."""
    return any(m not in _NO_SEG_LOSS_METHODS for m in result["methods"])


def _has_vldun(result: Mapping[str, Any]) -> bool:
    """The run has a VL-DUN row (joint, DC or an ablation)."""
    return any(m.startswith("vldun") for m in result["methods"])


def parse_merge_source(text: str) -> tuple[Path, list[str] | None]:
    """``FILE.json`` (every method of the file) or ``FILE.json:m1,m2`` (only those rows)."""
    path, sep, names = text.rpartition(".json:")
    if not sep:
        return Path(text), None
    path += ".json"
    methods = [m for m in names.split(",") if m]
    if not methods:
        raise ValueError(f"{text}: no method after ':'")
    return Path(path), methods


def select_methods(result: Mapping[str, Any], methods: Sequence[str] | None, source: str) -> dict[str, Any]:
    """``result`` with only ``methods`` (all when None); a name the file does not have is an error."""
    if methods is None:
        return dict(result)
    missing = [m for m in methods if m not in result["methods"]]
    if missing:
        raise ValueError(f"{source}: no method {missing} (it has {list(result['methods'])})")
    return {**result, "methods": {m: result["methods"][m] for m in methods}}


def _same_untrained_row(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Both rows are of a method without training (zero-filled) with the same per-slice metrics."""
    metrics = ("psnr", "ssim", "dice", "iou")
    return (
        a.get("iterations") == b.get("iterations") == 0
        and any(k in a for k in metrics)
        and all(a.get(k) == b.get(k) for k in metrics)
    )


def _vldun_settings_unlike(result: Mapping[str, Any], stated: Mapping[str, Any] | None) -> dict[str, Any]:
    """``{"vldun_settings": {...}}``: the VL-DUN-only recipe values of ``result`` that differ from those the merged
    table states (the ``vldun_dc`` run's), when ``result`` has a VL-DUN row; ``{}`` otherwise. Runs may differ in
    these values and still merge, so a VL-DUN row from such a run (e.g. a blind network with another seg head)
    must say what it was trained with, or the setup would describe it wrongly."""
    recipe = result["config"].get("recipe")
    if stated is None or not isinstance(recipe, Mapping) or not _has_vldun(result):
        return {}
    own = _normalised_recipe(recipe)
    differ = {k: own.get(k) for k in _VLDUN_ONLY_RECIPE_KEYS if own.get(k) != stated.get(k)}
    return {"vldun_settings": differ} if differ else {}


def merge_runs(results: Sequence[Mapping[str, Any]], sources: Sequence[str], budget_label: str) -> dict[str, Any]:
    """One results dict from several runs on the same test set with the same recipe (e.g. UNets from one run,
    VL-DUN from another with a different iteration count), so that their rows and paired claims share one table.

    Raises ``ValueError`` naming the file and the key when the runs are not comparable, or when a trained method
    appears in more than one run (which row to keep would be a silent choice). An untrained method (zero-filled)
    whose per-slice metrics are the same in both runs is kept once.
    """
    if len(results) < 2:
        raise ValueError("--merge needs at least two results files")
    ref, ref_src = results[0], sources[0]
    # the segmentation-loss values are compared between the runs that train one, against the first of them
    seg_ref, seg_src = next(((r, s) for r, s in zip(results, sources) if _segments(r)), (ref, ref_src))
    for r, src in zip(results[1:], sources[1:]):
        for key in ("dataset", "degradation", "test_ids"):
            if r.get(key) != ref.get(key):
                raise ValueError(f"{src}: {key} differs from {ref_src}; only runs on the same test set can be merged")
        others = [(ref, ref_src)] + ([(seg_ref, seg_src)] if _segments(r) and seg_ref is not ref else [])
        for key in _MERGE_KEYS:
            for other, other_src in others:
                both = _segments(r) and _segments(other)
                if _comparable(r["config"], key, both) != _comparable(other["config"], key, both):
                    raise ValueError(
                        f"{src}: config {key}={r['config'].get(key)!r} differs from {other_src} "
                        f"({other['config'].get(key)!r}); only runs with the same recipe can be merged"
                    )
    methods: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for r, src in zip(results, sources):
        for m, row in r["methods"].items():
            if m in methods:
                if _same_untrained_row(methods[m], row):
                    continue  # the zero-filled input of the same test set: the same numbers in every run
                raise ValueError(f"method {m!r} is in both {origin[m]} and {src}; drop it from one of them")
            methods[m], origin[m] = row, src
    iterations = sorted({r["config"]["iterations"] for r in results})
    budgets = sorted({r["config"].get("time_budget") or 0 for r in results})
    config = {**ref["config"], "iterations": iterations[0] if len(iterations) == 1 else iterations}
    if isinstance(config.get("recipe"), Mapping) and isinstance(seg_ref["config"].get("recipe"), Mapping):
        # the table states the segmentation loss its segmenting rows were trained with
        seg_recipe = _normalised_recipe(seg_ref["config"]["recipe"])
        seg_overrides = seg_ref["config"]["recipe"].get("overrides") or {}
        config["recipe"] = {**config["recipe"], **{k: seg_recipe[k] for k in _SEG_RECIPE_KEYS}}
        config["recipe"]["overrides"] = {
            **{k: v for k, v in (config["recipe"].get("overrides") or {}).items() if k not in _SEG_RECIPE_KEYS},
            **{k: v for k, v in seg_overrides.items() if k in _SEG_RECIPE_KEYS},
        }
    # the known-operator settings the table states are those of the run whose vldun_dc row it shows
    dc_run = next((r for r in results if "vldun_dc" in r["methods"]), None)
    if dc_run is not None and isinstance(config.get("recipe"), Mapping):
        dc_recipe = dc_run["config"].get("recipe") or {}
        recipe = {k: v for k, v in config["recipe"].items() if k not in _VLDUN_ONLY_RECIPE_KEYS}
        recipe.update({k: v for k, v in dc_recipe.items() if k in _VLDUN_ONLY_RECIPE_KEYS})
        recipe["overrides"] = {
            **{k: v for k, v in (recipe.get("overrides") or {}).items() if k not in _VLDUN_ONLY_RECIPE_KEYS},
            **{k: v for k, v in (dc_recipe.get("overrides") or {}).items() if k in _VLDUN_ONLY_RECIPE_KEYS},
        }
        config["recipe"] = recipe
    config["time_budget"] = (budgets[0] or None) if len(budgets) == 1 else [b or None for b in budgets]
    # rows trained on a GPU may share a table with CPU rows (the same computation up to float rounding); the
    # setup says so, and each source its device
    devices = sorted({r["config"].get("device", "cpu") for r in results})
    config.pop("device", None)
    if devices != ["cpu"]:
        config["device"] = " + ".join(devices)
    stated = _normalised_recipe(config["recipe"]) if isinstance(config.get("recipe"), Mapping) else None
    with_vldun = next((r for r in results if _has_vldun(r)), ref)
    prefix = ref["title"].split("px,")[0] + "px"
    return {
        **{k: v for k, v in ref.items() if k not in ("methods", "commands", "plot")},
        "title": f"{prefix}, merged from {len(results)} runs",
        "budget_label": budget_label,
        "config": config,
        "vldun_preset_config": with_vldun.get("vldun_preset_config", ref.get("vldun_preset_config")),
        "machine": with_vldun["machine"],
        "merged_from": [
            {
                "file": src,
                "methods": list(r["methods"]),
                "iterations": r["config"]["iterations"],
                "time_budget": r["config"].get("time_budget"),
                "git_commit": r["machine"].get("git_commit"),
                "device": r["config"].get("device", "cpu"),
                **_vldun_settings_unlike(r, stated),
            }
            for r, src in zip(results, sources)
        ],
        "methods": methods,
        "commands": [c for r in results for c in r["commands"]],
    }
