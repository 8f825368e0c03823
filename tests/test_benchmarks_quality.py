"""Smoke and semantics tests of benchmarks/bench_quality.py + quality/ on tiny synthetic data (never ../shared/data)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from benchmarks import bench_quality as bq
from benchmarks._slices import load_slices, preprocess_slice
from benchmarks.quality import combine, degradation, metrics, report
from benchmarks.quality.methods import METHODS


def _phantom(rng: np.random.RandomState, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """A bright ring (class 2) around a disk (class 1) on a textured background."""
    yy, xx = np.mgrid[:h, :w]
    cy, cx = h / 2 + rng.uniform(-3, 3), w / 2 + rng.uniform(-3, 3)
    r = np.hypot(yy - cy, xx - cx)
    r1 = rng.uniform(0.12, 0.2) * min(h, w)
    lab = np.zeros((h, w), np.uint8)
    lab[r < r1] = 1
    lab[(r >= r1) & (r < 1.5 * r1)] = 2
    img = 200 + 50 * np.sin(xx / 3.0) + rng.normal(0, 10, (h, w))
    img[lab == 1] += 900
    img[lab == 2] += 500
    return np.clip(img, 0, 65535).astype(np.uint16), lab


def _slice_folder(root, n_train=6, n_test=4, seed=0):
    rng = np.random.RandomState(seed)
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    for split, n in (("train", n_train), ("test", n_test)):
        for i in range(n):
            img, lab = _phantom(rng, 40 + i, 36)
            Image.fromarray(img).save(root / "images" / f"{split}_{i:03d}.png")
            Image.fromarray(lab).save(root / "labels" / f"{split}_{i:03d}.png")
    return root


# ----------------------------------------------------------------------------------------------- metrics
def test_dice_iou_absent_class_rules():
    gt = np.zeros((6, 6), int)
    pred = np.zeros((6, 6), int)
    gt[1:3, 1:3] = 1  # class 1: 4 px in truth
    pred[1:3, 1:2] = 1  # 2 px predicted, all inside
    pred[5, 5] = 3  # class 3: false positive on a slice without it
    # class 2: absent from both -> skipped (NaN)
    dice, iou = metrics.dice_iou_per_class(gt, pred, 4)
    assert dice[0] == pytest.approx(2 * 2 / (4 + 2))
    assert iou[0] == pytest.approx(2 / 4)
    assert math.isnan(dice[1]) and math.isnan(iou[1])
    assert dice[2] == 0.0 and iou[2] == 0.0


def test_summarize_skips_absent_and_averages_per_slice():
    gt = np.zeros((2, 4, 4), int)
    gt[0, :2, :2] = 1
    pred = gt.copy()
    pred[1, 0, 0] = 2  # slice 1: only a false positive of class 2 -> that slice scores 0
    clean = np.zeros((2, 4, 4), np.float32)
    s = metrics.summarize(clean, gt, None, pred, 3)
    assert s["dice_per_slice"] == [1.0, 0.0]
    assert s["dice_mean"] == pytest.approx(0.5) and s["dice_std"] == pytest.approx(0.5)
    assert s["dice_class"][0][2] == 1 and s["dice_class"][1][2] == 1  # one slice evaluated per class
    assert "psnr" not in s


def test_psnr_ssim_clip_and_conventions():
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    rng = np.random.RandomState(1)
    gt = rng.rand(32, 32)
    pred = gt + rng.normal(0, 0.1, gt.shape)
    p, s = metrics.psnr_ssim(gt, pred)
    clipped = np.clip(pred, 0, 1)
    assert p == pytest.approx(peak_signal_noise_ratio(gt, clipped, data_range=1.0))
    assert s == pytest.approx(structural_similarity(gt, clipped, data_range=1.0, win_size=7))
    # clipping only helps: the unclipped MSE is larger
    assert p > 10 * math.log10(1.0 / np.mean((gt - pred) ** 2))


def test_preprocess_resize_and_minmax():
    rng = np.random.RandomState(0)
    img, lab = _phantom(rng, 50, 30)
    im, lb = preprocess_slice(img, lab, 32)
    assert im.shape == (32, 32) and lb.shape == (32, 32)
    assert im.min() == 0.0 and im.max() == pytest.approx(1.0)
    assert set(np.unique(lb)) <= {0, 1, 2}  # nearest: no new label values
    const, _ = preprocess_slice(np.full((10, 10), 7.0), np.zeros((10, 10)), 8)
    assert np.all(const == 0)


# ----------------------------------------------------------------------------------------------- degradation
def test_fixed_test_masks_depend_only_on_seed_dataset_index():
    from scripts.transforms.kspace import sample_seed

    rng = np.random.RandomState(0)
    clean = rng.rand(3, 32, 32).astype(np.float32)
    deg = degradation.parse_degradation("cartesian:4:0.08")
    a = degradation.make_test_inputs(clean, deg, 0, "ds")
    b = degradation.make_test_inputs(clean, deg, 0, "ds")
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, degradation.make_test_inputs(clean, deg, 0, "other"))
    assert not np.allclose(a, degradation.make_test_inputs(clean, deg, 1, "ds"))
    us = deg.transform()
    y = us(torch.as_tensor(clean[2][None]), seed=sample_seed(0, "ds", 2))
    np.testing.assert_allclose(a[2], np.asarray(y[0]), atol=1e-6)
    # the protocol's rule: round(S*cf) centre columns from (S - band + 1) // 2, constant along the rows
    mask = np.asarray(us.mask)[0]
    band = round(32 * 0.08)
    start = (32 - band + 1) // 2
    assert np.all(mask[:, start : start + band] == 1)
    assert np.all(mask == mask[:1])


def test_more_undersampling_degrades_more():
    rng = np.random.RandomState(3)
    clean = np.stack([preprocess_slice(*_phantom(rng, 64, 64), 64)[0] for _ in range(6)])
    ps = {}
    for spec in ("cartesian:4:0.08", "cartesian:8:0.04", "radial:60", "radial:15"):
        x = degradation.make_test_inputs(clean, degradation.parse_degradation(spec), 0, "synthetic")
        ps[spec] = np.mean([metrics.psnr_ssim(c, d)[0] for c, d in zip(clean, x)])
    assert ps["cartesian:4:0.08"] > ps["cartesian:8:0.04"]
    assert ps["radial:60"] > ps["radial:15"]


def test_parse_degradation_errors():
    assert degradation.parse_degradation("radial:60").spokes == 60
    assert degradation.parse_degradation("cartesian:8:0.04").spec() == "cartesian:8:0.04"
    with pytest.raises(ValueError, match="bad degradation"):
        degradation.parse_degradation("spiral:3")


# ----------------------------------------------------------------------------------------------- end to end
@pytest.mark.slow
def test_end_to_end_all_methods(tmp_path):
    data = _slice_folder(tmp_path / "synth")
    out = tmp_path / "out"
    argv = [
        "--datasets", f"{data}@cartesian:4:0.08", "--modality", "MRI", "--methods", "all", "--size", "32",
        "--iterations", "2", "--batch-size", "2", "--preset", "tiny", "--out-dir", str(out), "--tag", "t",
        "--log-every", "0",
    ]  # fmt: skip
    assert bq.main(argv) == 0
    res = json.loads((out / "quality_t.json").read_text())
    assert set(res["methods"]) == set(METHODS)
    assert (out / "quality_t.png").stat().st_size > 1000
    md = (out / "quality_t.md").read_text()
    assert "python benchmarks/bench_quality.py --datasets" in md and "| VL-DUN joint (`vldun`) | 2 |" in md
    m = res["methods"]
    # the zero-filled row is the degraded test input, recomputed independently here
    loaded = load_slices(data, 32, modality="MRI")
    x = degradation.make_test_inputs(loaded.test.images, degradation.parse_degradation("cartesian:4:0.08"), 0, "synth")
    expect = np.mean([metrics.psnr_ssim(c, d)[0] for c, d in zip(loaded.test.images, x)])
    assert m["zero_filled"]["psnr_mean"] == pytest.approx(expect, abs=1e-3)
    assert m["zero_filled"]["n_slices"] == len(loaded.test) > 0
    for k in ("rec_unet", "sequential", "vldun", "vldun_no_seg", "vldun_no_fd", "varnet", "vldun_dc"):
        assert np.isfinite(m[k]["psnr_mean"]) and 0 <= m[k]["ssim_mean"] <= 1, k
    for k in ("seg_unet_degraded", "seg_unet_clean", "sequential", "vldun", "vldun_no_rec"):
        assert 0 <= m[k]["dice_mean"] <= 1 and len(m[k]["dice_class"]) == 2, k
    assert "psnr_mean" not in m["vldun_no_rec"] and "dice_mean" not in m["vldun_no_seg"]
    assert m["vldun_no_clip"]["switches"] == {"use_clip_prior": False}
    assert m["vldun_dc"]["switches"] == {"data_consistency": True} and 0 <= m["vldun_dc"]["dice_mean"] <= 1
    assert m["varnet"]["cascades"] == 4 and "dice_mean" not in m["varnet"]
    # the DC network is also scored without its measurements; the VarNet has no blind mode
    blind = m["vldun_dc"]["blind"]
    assert np.isfinite(blind["psnr_mean"]) and 0 <= blind["dice_mean"] <= 1 and "blind" not in m["varnet"]
    assert blind["psnr"] != m["vldun_dc"]["psnr"]
    assert "blind − `vldun`" in (out / "quality_t.md").read_text()
    assert "modality_accuracy" not in m["vldun_no_clip"] and "modality_accuracy" in m["vldun"]
    assert all(m[k]["iterations"] == 2 for k in METHODS if k != "zero_filled")
    assert m["sequential"]["train_seconds"] >= m["sequential"]["rec_train_seconds"]
    # a second run with the same configuration adds to the same results file
    assert bq.main(argv[:4] + ["--methods", "zero_filled"] + argv[6:]) == 0
    res2 = json.loads((out / "quality_t.json").read_text())
    assert set(res2["methods"]) == set(METHODS) and len(res2["commands"]) == 2


def test_nifti_datalist_source(tmp_path):
    import nibabel as nib

    rng = np.random.RandomState(5)
    items = {"training": [], "test": []}
    for split, n in (("training", 2), ("test", 1)):
        for i in range(n):
            vol = np.stack([_phantom(rng, 24, 20)[0] for _ in range(3)], -1).astype(np.float32)
            lab = (vol > 900).astype(np.uint8)
            name = f"{split}_{i}"
            nib.save(nib.Nifti1Image(vol, np.eye(4)), tmp_path / f"{name}.nii.gz")
            nib.save(nib.Nifti1Image(lab, np.eye(4)), tmp_path / f"{name}_seg.nii.gz")
            items[split].append(
                {"image": f"{name}.nii.gz", "label": f"{name}_seg.nii.gz", "modality": "CT", "case_id": name}
            )
    dl = tmp_path / "dl.json"
    dl.write_text(json.dumps({"labels": {"0": "background", "1": "bright"}, **items}))
    d = load_slices(dl, 16)
    assert len(d.train) == 6 and len(d.test) == 3  # 3 slices per volume along the last axis
    assert d.class_names == ["background", "bright"] and d.modality == "CT"
    assert d.test.ids == ["test_0_z000", "test_0_z001", "test_0_z002"]
    out = tmp_path / "out"
    assert bq.main(["--datasets", str(dl), "--methods", "zero_filled", "--size", "16", "--out-dir", str(out)]) == 0
    res = json.loads(next(out.glob("quality_*.json")).read_text())
    assert res["degradation"] == "radial:60"  # CT default


def test_missing_shared_data_is_skipped(tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["--datasets", "acdc_8x", "--data-root", str(tmp_path / "absent"), "--out-dir", str(out)]
    assert bq.main(argv + ["--methods", "zero_filled"]) == 0
    assert "SKIP" in capsys.readouterr().out
    assert not out.exists() or not any(out.iterdir())
    with pytest.raises(SystemExit):
        bq.main(["--datasets", str(tmp_path / "nope"), "--methods", "zero_filled", "--out-dir", str(out)])


def test_paired_difference_is_clustered_by_patient():
    from scipy.stats import t as student_t

    a, b = [1.0, 1.0, 3.0, 3.0, None], [0.0, 0.0, 0.0, 0.0, 0.0]
    mean, half, g, n = metrics._paired(a, b, ["p1", "p1", "p2", "p2", "p2"])
    assert (mean, g, n) == (2.0, 2, 4)
    assert half == pytest.approx(student_t.ppf(0.975, 1) * math.sqrt(2) / math.sqrt(2))
    mean, half, g, n = metrics._paired(a, b)  # no patients: every slice is its own group, narrower interval
    assert (mean, g, n) == (2.0, 4, 4) and half < student_t.ppf(0.975, 1)


def test_paired_over_seeds_has_the_seed_and_the_patient_as_random_effects():
    from scipy.stats import t as student_t

    groups = ["p1", "p1", "p2", "p3", "p4"]
    zeros = [0.0] * 5

    def run(per_patient, extra=()):
        slices = [per_patient[int(g[1]) - 1] for g in groups]
        return (slices + list(extra), zeros + [0.0] * len(extra), groups + [f"x{i}" for i in range(len(extra))])

    # patients differ, seeds do not: the patient interval of the seed-averaged differences (G − 1 dof)
    patients = [0.1, 0.3, 0.2, 0.6]
    mean, half, s, g = metrics._paired_over_seeds([run(patients), run(patients), run(patients)])
    ref = metrics._paired(patients, [0.0] * 4)
    assert (s, g) == (3, 4) and mean == pytest.approx(ref[0]) and half == pytest.approx(ref[1])
    # seeds differ, patients do not: the t interval over the seed means (S − 1 dof); patients of one seed only
    # (x0) do not count
    shifts = [0.1, -0.2, 0.4]
    mean, half, s, g = metrics._paired_over_seeds([run([v] * 4, extra=[9.0] if v > 0.3 else []) for v in shifts])
    sd = float(np.std(shifts, ddof=1))
    assert (s, g) == (3, 4) and mean == pytest.approx(0.1)
    assert half == pytest.approx(student_t.ppf(0.975, 2) * sd / math.sqrt(3))
    # both random (3 seeds × 6 patients, as at ACDC 8×): the interval covers the true mean ~95 % of the time, where
    # the patient interval of the seed-averaged differences, blind to the seed spread, falls well short
    rng = np.random.default_rng(0)
    names = [f"p{i}" for i in range(6)]
    hits = naive = 0
    for _ in range(1000):
        d = 0.05 * rng.standard_normal((3, 1)) + 0.08 * rng.standard_normal((1, 6)) + 0.03 * rng.standard_normal((3, 6))
        m, h, _, _ = metrics._paired_over_seeds([(list(row), [0.0] * 6, names) for row in d])
        hits += abs(m) <= h
        m2, h2, _, _ = metrics._paired(list(d.mean(axis=0)), [0.0] * 6)
        naive += abs(m2) <= h2
    assert 0.92 <= hits / 1000 <= 0.99 and naive / 1000 < 0.9
    assert metrics._paired_over_seeds([run(patients)]) is None  # one seed: no seed variance
    assert metrics._paired_over_seeds([run(patients), run(patients)])[1] == pytest.approx(
        student_t.ppf(0.975, 3) * np.std(patients, ddof=1) / 2
    )
    assert metrics._paired_over_seeds([run([0.2] * 4), run([0.2] * 4)]) == (pytest.approx(0.2), 0.0, 2, 4)


def test_seed_summary_verdicts():
    def run(seed, shift):
        base = {"dice_per_slice": [0.5, 0.5, 0.6, 0.6], "psnr": [20.0, 20.0, 21.0, 21.0]}
        joint = {k: [v + shift + 0.01 * i for i, v in enumerate(vals)] for k, vals in base.items()}
        mk = lambda d: {**d, "dice_mean": float(np.mean(d["dice_per_slice"])), "psnr_mean": float(np.mean(d["psnr"]))}  # noqa: E731
        return {
            "dataset": "d",
            "degradation": "radial:60",
            "title": "t",
            "budget_label": "b",
            "config": {"seed": 0, "train_seed": seed, "size": 32, "batch_size": 2, "iterations": 2, "lr": 1e-3},
            "test_groups": ["p1", "p1", "p2", "p3"],
            "methods": {"sequential": mk(base), "rec_unet": mk(base), "vldun": mk(joint)},
        }

    md = combine.render_seed_summary([run(0, 0.2), run(1, 0.3)], ["a.json", "b.json"])
    row = next(line for line in md.splitlines() if line.startswith("| joint beats separate (Dice)"))
    assert row.endswith("| supported |")
    pooled = metrics._paired_over_seeds(
        [(r["methods"]["vldun"]["dice_per_slice"], r["methods"]["sequential"]["dice_per_slice"], r["test_groups"])
         for r in (run(0, 0.2), run(1, 0.3))]
    )  # fmt: skip
    assert row.split("|")[-3].strip() == f"{pooled[0]:+.3f} ± {pooled[1]:.3f}"
    assert pooled[0] == pytest.approx(0.25 + (0.005 + 0.02 + 0.03) / 3)  # patient means, then the seeds
    vrow = next(line for line in md.splitlines() if "(`vldun`)" in line)
    mean, sd = (float(v) for v in vrow.split("|")[3].split("±"))
    assert mean == pytest.approx(20.5 + 0.25 + 0.015, abs=0.006) and sd == pytest.approx(0.1 / math.sqrt(2), abs=0.006)
    md = combine.render_seed_summary([run(0, 0.2), run(1, -0.3)], ["a.json", "b.json"])
    assert next(ln for ln in md.splitlines() if ln.startswith("| joint beats separate (Dice)")).endswith("undecided |")
    assert "without the measurements" not in md
    # a DC network's blind-mode evaluation gets its own row, counted over the seeds that recorded one
    runs = [run(0, 0.2), run(1, 0.3)]
    runs[0]["methods"]["vldun_dc"] = {**runs[0]["methods"]["vldun"], "blind": {"psnr_mean": 19.0, "dice_mean": 0.3}}
    runs[1]["methods"]["vldun_dc"] = dict(runs[1]["methods"]["vldun"])
    md = combine.render_seed_summary(runs, ["a.json", "b.json"])
    brow = next(ln for ln in md.splitlines() if "(`vldun_dc`), the same weights without the measurements" in ln)
    assert brow.split("|")[2:4] == [" 1 ", " 19.00 ± 0.00 "] and brow.split("|")[5] == " 0.300 ± 0.000 "
    other = run(1, 0.2)
    other["config"]["size"] = 64
    with pytest.raises(ValueError, match="differ only"):
        combine.render_seed_summary([run(0, 0.2), other], ["a", "b"])
    # a file that recorded an overridden value only among the overrides is the same recipe as one that records it
    overrides = {"dc_cascade_features": [32, 32, 64, 128, 256, 32]}
    old, new = run(0, 0.2), run(1, 0.3)
    recipe = {"config": "train.json", "optimizer": "torch.optim.AdamW", "learning_rate": 2e-3, "weight_decay": 1e-4}
    recipe.update(lr_scheduler="WarmupCosineSchedule", warmup_epochs=1, epochs=22, warmup_start_factor=0.1)
    old["config"]["recipe"] = {**recipe, "overrides": overrides}
    new["config"]["recipe"] = {**recipe, "overrides": overrides, **overrides, "dice_ce_kwargs": {}}
    assert "supported" in combine.render_seed_summary([old, new], ["a", "b"])
    new["config"]["recipe"]["dc_cascade_features"] = [8] * 6
    with pytest.raises(ValueError, match="differ only"):
        combine.render_seed_summary([old, new], ["a", "b"])
    # files from before seg_hidden was recorded trained with their preset's width
    new["config"]["recipe"]["dc_cascade_features"] = overrides["dc_cascade_features"]
    old["config"]["recipe"]["preset"] = new["config"]["recipe"]["preset"] = "small"
    new["config"]["recipe"]["seg_hidden"] = 32
    assert "supported" in combine.render_seed_summary([old, new], ["a", "b"])
    new["config"]["recipe"]["seg_hidden"] = 64
    with pytest.raises(ValueError, match="differ only"):
        combine.render_seed_summary([old, new], ["a", "b"])


def test_compare_one_method_trained_two_ways_over_seeds(tmp_path):
    def run(seed, dropout, shift, blind=True):
        row = {"psnr": [20.0 + shift, 20.0 + shift, 21.0 + shift, 22.0], "dice_per_slice": [0.5, 0.5, 0.6, 0.6]}
        if blind:
            row["blind"] = {"psnr": [19.0, 19.0, 19.5, 19.0 + shift]}
        recipe = {"config": "train.json", "measurement_dropout": dropout, "overrides": {"measurement_dropout": dropout}}
        config = {"seed": 0, "train_seed": seed, "size": 32, "batch_size": 2, "iterations": 2, "recipe": recipe}
        test = {"test_ids": [0, 1, 2, 3], "test_groups": ["p1", "p1", "p2", "p3"]}
        return {"dataset": "d", "degradation": "cartesian:8:0.04", "title": "t", "config": config, **test,
                "methods": {"vldun_dc": row}}  # fmt: skip

    pairs = [(run(0, 0.0, 0.4), run(0, 0.25, 0.0)), (run(1, 0.0, 0.6, blind=False), run(1, 0.25, 0.0))]
    md = combine.render_comparison(pairs, ["a0 / b0", "a1 / b1"], "vldun_dc")
    assert "A and B differ in (A / B): `measurement_dropout`: 0.0 / 0.25." in md
    rows = {tuple(c.strip() for c in ln.split("|")[1:3]): ln for ln in md.splitlines() if ln.startswith("| ")}
    per_patient = [[0.4, 0.4, 0.0], [0.6, 0.6, 0.0]]  # slices of p1 average; the last slice does not move
    expected = metrics._paired_over_seeds([(row, [0.0] * 3, None) for row in per_patient])
    assert rows[("PSNR (dB)", "measured")].endswith(f"| {expected[0]:+.3f} ± {expected[1]:.3f} (2 seeds) |")
    # seed 1's A run has no blind evaluation: one seed, no interval over the seeds
    blind = metrics._paired([19.0, 19.0, 19.5, 19.4], [19.0, 19.0, 19.5, 19.0], ["p1", "p1", "p2", "p3"])
    assert rows[("PSNR (dB)", "blind")].split("|")[3:6] == [f" {blind[0]:+.3f} ± {blind[1]:.3f} ", " – ", " – "]
    assert ("mean Dice", "blind") not in rows and rows[("mean Dice", "measured")].count("+0.000 ± 0.000") == 3
    with pytest.raises(ValueError, match="x: the two runs of a pair must have the same training seed"):
        combine.render_comparison([(run(0, 0.0, 0.4), run(1, 0.25, 0.0))], ["x"], "vldun_dc")
    with pytest.raises(ValueError, match="a0 / b0: run A has no 'vldun' row"):
        combine.render_comparison(pairs, ["a0 / b0", "a1 / b1"], "vldun")
    other = run(1, 0.0, 0.6)
    other["config"]["size"] = 64
    with pytest.raises(ValueError, match="the A runs must differ only"):
        combine.render_comparison([pairs[0], (other, run(1, 0.25, 0.0))], ["x", "y"], "vldun_dc")
    # the CLI: one pair per seed, each file once
    files = []
    for i, (a, b) in enumerate(pairs):
        for side, res in (("a", a), ("b", b)):
            files.append(tmp_path / f"{side}{i}.json")
            files[-1].write_text(json.dumps(res))
    out = tmp_path / "cmp.md"
    assert bq.main(["--compare", str(out), "vldun_dc", f"{files[0]},{files[1]}", f"{files[2]},{files[3]}"]) == 0
    assert out.read_text() == md.replace("a0 / b0", "a0.json / b0.json").replace("a1 / b1", "a1.json / b1.json")
    with pytest.raises(SystemExit, match="each pair is A.json,B.json"):
        bq.main(["--compare", str(out), "vldun_dc", str(files[0])])


def _run_file(methods: dict, iterations: int, time_budget=None, **cfg):
    config = {"size": 32, "batch_size": 2, "lr": 1e-3, "seed": 0, "train_seed": 0, "preset": "tiny"}
    config.update(iterations=iterations, time_budget=time_budget, lambda_prior=0.1, unet_features=[4] * 6, threads=1)
    config.update(cfg)
    return {
        "title": f"d (radial:60), 32px, {iterations} iterations",
        "budget_label": "b",
        "dataset": "d",
        "modality": "CT",
        "source": "/data/d",
        "train_slices": 4,
        "test_slices": 3,
        "degradation": "radial:60",
        "degradation_text": "60 radial spokes",
        "test_ids": ["a", "b", "c"],
        "test_groups": ["p1", "p1", "p2"],
        "class_names": ["background", "x"],
        "config": config,
        "machine": {
            "git_commit": f"g{iterations}",
            "cpu": "c",
            "cpu_count": 2,
            "platform": "p",
            "torch": "t",
            "monai": "m",
        },
        "methods": methods,
        "commands": [{"command": f"run {iterations}", "methods": list(methods), "date": "d", "seconds": 1.0}],
    }


def test_merge_runs_keeps_each_rows_budget_and_refuses_incomparable_runs():
    unets = _run_file({"rec_unet": {"iterations": 300}, "sequential": {"iterations": 300}}, 300)
    joint = _run_file({"vldun": {"iterations": 120}}, 1200, time_budget=60.0)
    res = combine.merge_runs([unets, joint], ["u.json", "j.json"], "label")
    assert list(res["methods"]) == ["rec_unet", "sequential", "vldun"]
    assert res["config"]["iterations"] == [300, 1200] and res["config"]["time_budget"] == [None, 60.0]
    assert res["machine"]["git_commit"] == "g1200"  # the VL-DUN run's code is the one the preset config describes
    assert [c["command"] for c in res["commands"]] == ["run 300", "run 1200"]
    assert res["title"] == "d (radial:60), 32px, merged from 2 runs" and res["budget_label"] == "label"
    assert [m["file"] for m in res["merged_from"]] == ["u.json", "j.json"]
    with pytest.raises(ValueError, match=r"j\.json: config size=64"):
        combine.merge_runs([unets, _run_file({"vldun": {}}, 1200, size=64)], ["u.json", "j.json"], "l")
    other_test = _run_file({"vldun": {}}, 1200)
    other_test["test_ids"] = ["a", "b"]
    with pytest.raises(ValueError, match="test_ids differs"):
        combine.merge_runs([unets, other_test], ["u.json", "j.json"], "l")
    with pytest.raises(ValueError, match="'rec_unet' is in both"):
        combine.merge_runs([unets, _run_file({"rec_unet": {}}, 1200)], ["u.json", "j.json"], "l")
    # the zero-filled row of the same test set is the same in every run: kept once; different numbers: refused
    zf = {"iterations": 0, "psnr": [20.0, 21.0, 19.0], "ssim": [0.5, 0.6, 0.4]}
    res = combine.merge_runs(
        [_run_file({"zero_filled": dict(zf), "rec_unet": {}}, 300), _run_file({"zero_filled": dict(zf)}, 1200)],
        ["u.json", "j.json"],
        "l",
    )
    assert list(res["methods"]) == ["zero_filled", "rec_unet"]
    with pytest.raises(ValueError, match="'zero_filled' is in both"):
        combine.merge_runs(
            [_run_file({"zero_filled": dict(zf)}, 300), _run_file({"zero_filled": {**zf, "psnr": [1, 2, 3]}}, 1200)],
            ["u.json", "j.json"],
            "l",
        )


def test_rows_trained_on_a_gpu_say_so_in_the_merged_table():
    from benchmarks.quality.report import render_markdown

    def row():
        return {"iterations": 300, "train_seconds": 30.0, "sec_per_iter": 0.1, "params": 10}

    unets = _run_file({"rec_unet": row()}, 300)
    joint = _run_file({"vldun": row()}, 300, device="cuda")
    joint["machine"]["gpu"] = "NVIDIA H100"
    res = combine.merge_runs([unets, joint], ["u.json", "j.json"], "label")
    assert res["config"]["device"] == "cpu + cuda"
    assert [m["device"] for m in res["merged_from"]] == ["cpu", "cuda"]
    md = render_markdown(res)
    assert "git `g300`, on cuda" in md and "trained and evaluated on cpu + cuda (NVIDIA H100" in md
    cpu_only = combine.merge_runs([unets, _run_file({"vldun": row()}, 300)], ["u.json", "j.json"], "label")
    assert "device" not in cpu_only["config"] and "trained and evaluated on" not in render_markdown(cpu_only)


@pytest.mark.skipif(torch.cuda.is_available(), reason="the machine has a GPU: the CUDA run below is the check")
def test_a_device_this_machine_lacks_stops_the_benchmark_before_any_work(tmp_path):
    for device, msg in [("cuda", "sees no CUDA GPU"), ("tpu", "--device: "), ("mps", "runs on cpu or cuda")]:
        with pytest.raises(SystemExit, match=msg):
            bq.main(["--datasets", str(tmp_path / "none"), "--device", device, "--out-dir", str(tmp_path)])
    assert not list(tmp_path.iterdir())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (CI has none; run on a lent device)")
def test_the_benchmark_trains_and_evaluates_on_a_gpu(tmp_path):
    data = _slice_folder(tmp_path / "synth")
    argv = [
        "--datasets", f"{data}@cartesian:4:0.08", "--modality", "MRI", "--methods", "zero_filled", "sequential",
        "varnet", "vldun_dc", "--size", "32", "--iterations", "2", "--batch-size", "2", "--preset", "tiny",
        "--out-dir", str(tmp_path / "out"), "--tag", "g", "--log-every", "0", "--unet-features", "4,4,4,4,4,4",
        "--varnet-cascades", "1", "--device", "cuda",
    ]  # fmt: skip
    assert bq.main(argv) == 0
    res = json.loads((tmp_path / "out" / "quality_g.json").read_text())
    assert res["config"]["device"] == "cuda" and res["machine"]["gpu"]
    for k in ("sequential", "varnet", "vldun_dc"):
        assert np.isfinite(res["methods"][k]["psnr_mean"]), k
    assert "trained and evaluated on cuda" in (tmp_path / "out" / "quality_g.md").read_text()


def test_merge_selects_rows_and_states_the_dc_settings_of_the_vldun_dc_row():
    assert combine.parse_merge_source("a/b.json") == (Path("a/b.json"), None)
    assert combine.parse_merge_source("a/b.json:vldun,varnet") == (Path("a/b.json"), ["vldun", "varnet"])
    with pytest.raises(ValueError, match="no method after"):
        combine.parse_merge_source("b.json:")
    small = {"dc_cascades": 2, "overrides": {}}
    wide = {"dc_cascades": 4, "overrides": {"dc_cascades": 4, "dc_cascade_features": [32] * 6}}
    base = _run_file({"rec_unet": {}, "vldun_dc": {}}, 300, recipe={"lr_scheduler": "s", **small})
    other = _run_file({"vldun_dc": {}}, 300, recipe={"lr_scheduler": "s", **wide})
    with pytest.raises(ValueError, match="no method \\['varnet'\\]"):
        combine.select_methods(other, ["varnet"], "o.json")
    # the wide run's overrides touch only the known-operator network: comparable; its row and its settings win
    res = combine.merge_runs([combine.select_methods(base, ["rec_unet"], "b.json"), other], ["b.json", "o.json"], "l")
    assert list(res["methods"]) == ["rec_unet", "vldun_dc"]
    assert res["config"]["recipe"]["dc_cascades"] == 4
    assert res["config"]["recipe"]["overrides"] == wide["overrides"]
    text = report._dc_text(res["config"]["recipe"])
    assert "4 VarNet-style cascades (BasicUNet features [32, 32, 32, 32, 32, 32])" in text
    assert "no loss on the rec head's estimate before the projection" in text  # files from before lambda_pre_dc
    assert "1.0·MSE on the rec head's estimate" in report._dc_text({**wide, "lambda_pre_dc": 1.0, "rec_loss": "mse"})
    with pytest.raises(ValueError, match="recipe"):  # an override of a shared knob is a different recipe
        combine.merge_runs(
            [base, _run_file({"x": {}}, 300, recipe={"lr_scheduler": "s", "overrides": {"lambda_rec": 3}})],
            ["b.json", "x.json"],
            "l",
        )


def test_merge_cli_writes_a_table_with_both_runs(tmp_path, capsys):
    files = []
    for name, methods, its in (("u", ("zero_filled", "rec_unet"), 300), ("j", ("vldun",), 1200)):
        rows = {}
        for m in methods:
            rows[m] = {
                "iterations": its,
                "train_seconds": 1.0,
                "sec_per_iter": 0.1,
                "params": 10,
                "psnr": [20.0, 21.0, 22.0],
                "psnr_mean": 21.0,
                "psnr_std": 0.8,
            }
        f = tmp_path / f"{name}.json"
        f.write_text(json.dumps(_run_file(rows, its)))
        files.append(str(f))
    out = tmp_path / "m.json"
    assert bq.main(["--merge", str(out), *files, "--budget-label", "two budgets"]) == 0
    md = out.with_suffix(".md").read_text()
    assert "**two budgets**" in md and "merged by `--merge` from `u.json`" in md and "(`vldun`) | 1200 |" in md
    with pytest.raises(SystemExit, match="must end in .json"):
        bq.main(["--merge", str(tmp_path / "m.md"), *files])
    with pytest.raises(SystemExit, match=r"absent\.json: not a readable results JSON"):
        bq.main(["--merge", str(out), files[0], str(tmp_path / "absent.json")])
    (tmp_path / "other.json").write_text('{"a": 1}')
    with pytest.raises(SystemExit, match=r"other\.json: not a bench_quality results file"):
        bq.main(["--merge", str(out), files[0], str(tmp_path / "other.json")])
    with pytest.raises(SystemExit, match=r"absent\.json: not a readable results JSON"):
        bq.main(["--aggregate", str(tmp_path / "s.md"), files[0], str(tmp_path / "absent.json")])


# ----------------------------------------------------------------------------------------------- one recipe
def test_recipe_is_train_json_with_overrides():
    from benchmarks.quality.recipe import Recipe, parse_overrides

    assert parse_overrides(["lambda_rec=3", "rec_loss=l1", "patch_size=[32, 32]"]) == {
        "lambda_rec": 3,
        "rec_loss": "l1",
        "patch_size": [32, 32],
    }
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_overrides(["lambda_rec"])
    with pytest.raises(KeyError, match="lamda_rec"):
        Recipe({"lamda_rec": 3})
    r = Recipe({"learning_rate": 0.002, "preset": "tiny"})
    d = r.describe()
    declared = json.loads((Path(__file__).resolve().parents[1] / "bundle" / "configs" / "train.json").read_text())
    assert d["learning_rate"] == 0.002 and d["rec_loss"] == "mse" and d["lambda_rec"] == declared["lambda_rec"]
    assert d["task_balance"] == declared["task_balance"]
    assert d["grad_clip_norm"] is None and declared["train"]["trainer"]["grad_clip_norm"] == "@grad_clip_norm"
    assert d["lr_scheduler"] == "monai.optimizers.WarmupCosineSchedule" and d["optimizer"] == "torch.optim.AdamW"
    net = r.build_vldun(3, {"seg_head": False})
    assert net.seg_head is None and net.num_classes == 3 if hasattr(net, "num_classes") else net.seg_head is None


def test_recipe_overrides_reach_into_config_sections():
    """``--set network_def#use_clip_prior=false`` combines a constructor switch with any method (vldun_dc)."""
    from benchmarks.quality.recipe import Recipe

    r = Recipe({"preset": "tiny", "network_def#use_clip_prior": False})
    assert r.build_vldun(2, {}).clip_prior is None
    assert r.build_vldun(2, {"data_consistency": True}).clip_prior is None
    assert Recipe({"preset": "tiny"}).build_vldun(2, {}).clip_prior is not None
    for bad in ("no_such_section#x", "network_def#num_classes#x", "preset#x"):
        with pytest.raises(KeyError, match="neither top-level keys"):
            Recipe({bad: 1})
    with pytest.raises(RuntimeError, match="use_clip_prir"):
        Recipe({"preset": "tiny", "network_def#use_clip_prir": False}).build_vldun(2, {})


def test_varnet_trains_with_its_measurements_whatever_the_recipes_dropout(tmp_path):
    """train.json's measurement dropout trains VL-DUN for blind batches too; the VarNet cascade has no blind mode,
    so it must get the measurements on every batch (dropout 1 would otherwise drop them all)."""
    data = _slice_folder(tmp_path / "synth")
    argv = [
        "--datasets", f"{data}@cartesian:4:0.08", "--modality", "MRI", "--methods", "varnet", "--size", "32",
        "--iterations", "2", "--batch-size", "2", "--preset", "tiny", "--out-dir", str(tmp_path / "out"), "--tag", "d",
        "--log-every", "0", "--unet-features", "4,4,4,4,4,4", "--varnet-cascades", "1", "--set",
        "measurement_dropout=1.0",
    ]  # fmt: skip
    assert bq.main(argv) == 0
    res = json.loads((tmp_path / "out" / "quality_d.json").read_text())
    assert np.isfinite(res["methods"]["varnet"]["psnr_mean"])


def test_grad_clip_norm_of_the_recipe_reaches_the_trainer_and_the_table(tmp_path, monkeypatch):
    from scripts.workflows import engines

    clips = []
    original = engines.VLDUNTrainer._clip_gradients

    def spy(self, engine):
        original(self, engine)
        clips.append((self.grad_clip_norm, engine.state.grad_norm))

    monkeypatch.setattr(engines.VLDUNTrainer, "_clip_gradients", spy)
    data = _slice_folder(tmp_path / "synth")
    argv = [
        "--datasets", f"{data}@cartesian:4:0.08", "--modality", "MRI", "--methods", "rec_unet", "--size", "32",
        "--iterations", "2", "--batch-size", "2", "--out-dir", str(tmp_path / "out"), "--tag", "c",
        "--log-every", "0", "--unet-features", "4,4,4,4,4,4", "--set", "grad_clip_norm=0.25",
    ]  # fmt: skip
    assert bq.main(argv) == 0
    assert len(clips) == 2 and all(c == 0.25 and np.isfinite(n) for c, n in clips)
    res = json.loads((tmp_path / "out" / "quality_c.json").read_text())
    assert res["config"]["recipe"]["grad_clip_norm"] == 0.25
    trace = res["methods"]["rec_unet"]["trace"]  # the pre-clip norms, one per step, as the trainer saw them
    assert trace["grad_norm"] == pytest.approx([n for _, n in clips], rel=1e-4) and len(trace["loss"]) == 2
    assert "gradients clipped to global norm 0.25" in (tmp_path / "out" / "quality_c.md").read_text()


def test_seg_unet_dropout_of_the_recipe_reaches_every_segmentation_unet_and_the_table(tmp_path, monkeypatch):
    """One recipe for every method: the baselines' segmentation UNets get the dropout VL-DUN's UNet head gets, the
    restoration UNet none."""
    from benchmarks.quality import methods

    built = []
    original = methods.make_unet

    def spy(out_channels, features, dropout=0.0):
        built.append((out_channels, dropout))
        return original(out_channels, features, dropout)

    monkeypatch.setattr(methods, "make_unet", spy)
    data = _slice_folder(tmp_path / "synth")
    argv = [
        "--datasets", f"{data}@cartesian:4:0.08", "--modality", "MRI", "--methods", "sequential", "seg_unet_degraded",
        "--size", "32", "--iterations", "1", "--batch-size", "2", "--out-dir", str(tmp_path / "out"), "--tag", "p",
        "--log-every", "0", "--unet-features", "4,4,4,4,4,4", "--set", "seg_unet_dropout=0.3",
    ]  # fmt: skip
    assert bq.main(argv) == 0
    assert [d for k, d in built if k == 1] == [0.0] and [d for k, d in built if k > 1] == [0.3, 0.3]
    res = json.loads((tmp_path / "out" / "quality_p.json").read_text())
    assert res["config"]["recipe"]["seg_unet_dropout"] == 0.3
    assert "dropout 0.3 in every segmentation UNet" in (tmp_path / "out" / "quality_p.md").read_text()


class _HalfImage(torch.nn.Module):
    def forward(self, x):
        return 0.5 * x


def test_varnet_cascades_start_from_the_measurements_with_a_unit_coil():
    """Each cascade is MONAI's ``k - w M (k - y) - F(refine(F^-1 k))`` from ``k = y``: with ``refine(x) = x / 2`` and
    ``w = 1/2`` the first halves k, the second keeps it (its DC term adds back what the refinement takes), so the
    output is half the zero-filled magnitude."""
    from benchmarks.quality.varnet import KspaceVarNet
    from scripts.transforms.kspace import KspaceUndersample, ifft2c

    us = KspaceUndersample(accelerations=(4.0,), center_fractions=(0.08,)).set_random_state(0)
    degraded = us(torch.rand(2, 1, 24, 20))
    net = KspaceVarNet(num_cascades=2, features=(4, 4, 4, 4, 4, 4))
    for block in net.cascades:
        block.model = _HalfImage()
        with torch.no_grad():
            block.dc_weight.fill_(0.5)
    out = net(degraded, us.kspace, us.mask)["restored"]
    assert torch.allclose(out, 0.5 * ifft2c(us.kspace).abs(), atol=1e-6)
    assert torch.allclose(ifft2c(us.kspace).abs(), degraded, atol=1e-5)  # the same measurements as the input


@pytest.mark.slow
def test_methods_train_with_the_bundle_recipe_on_a_validation_split(tmp_path):
    data = _slice_folder(tmp_path / "synth", n_train=10)
    out = tmp_path / "out"
    argv = [
        "--datasets", f"{data}@cartesian:4:0.08", "--modality", "MRI", "--methods", "zero_filled", "rec_unet",
        "seg_unet_degraded", "vldun", "--size", "32", "--iterations", "6", "--batch-size", "2", "--preset", "tiny",
        "--set", "learning_rate=0.002", "--set", "lambda_rec=3", "--split", "validation", "--grad-probe", "3",
        "--out-dir", str(out), "--tag", "v", "--log-every", "0", "--unet-features", "4,4,4,4,4,4",
    ]  # fmt: skip
    assert bq.main(argv) == 0
    res = json.loads((out / "quality_v.json").read_text())
    cfg, m = res["config"], res["methods"]
    assert cfg["split"] == "validation" and cfg["recipe"]["overrides"] == {
        "learning_rate": 0.002,
        "lambda_rec": 3,
        "preset": "tiny",
    }
    # every 5th training patient (one slice each here) is held out; the protocol's test part is not used
    full = load_slices(data, 32, modality="MRI")
    assert res["test_ids"] == full.train.ids[::5] and not set(res["test_ids"]) & set(full.test.ids)
    assert res["train_slices"] + res["test_slices"] == len(full.train)
    for k in ("rec_unet", "seg_unet_degraded", "vldun"):
        assert m[k]["iterations"] == 6
        # warm-up + cosine over the run's iterations: the last step's rate is far below the peak
        assert 0 <= m[k]["final_lr"] < 0.2 * 0.002, (k, m[k]["final_lr"])
    probe = m["vldun"]["grad_probe"]
    assert [r["iteration"] for r in probe] == [1, 3, 6]
    assert all(r["rec"] > 0 and r["seg"] > 0 for r in probe[1:])  # the rec head starts at zero: no rec grad at 1
    assert "grad_probe" not in m["rec_unet"]
    # each loss term per iteration (no clipping: no gradient norm); the total is the sum the trainer stepped on
    trace = m["vldun"]["trace"]
    assert {"loss", "loss_rec", "loss_seg"} <= set(trace) and "grad_norm" not in trace
    assert all(len(v) == 6 and all(math.isfinite(x) for x in v) for v in trace.values())
    assert set(m["rec_unet"]["trace"]) == {"loss", "loss_rec"}
    md = (out / "quality_v.md").read_text()
    assert "Task gradients on the shared trunk" in md and "evaluated on the validation part" in md
    assert "lambda_rec=3" in md and "WarmupCosineSchedule" in md


def test_sequential_wrapper_freezes_its_restoration_network():
    from benchmarks.quality.recipe import DictOutput, shared_parameters

    rec = DictOutput(torch.nn.Conv2d(1, 1, 3, padding=1), "restored")
    seg = DictOutput(torch.nn.Conv2d(1, 3, 1), "seg", before=rec)
    x = torch.rand(2, 1, 8, 8)
    out = seg.train()(x)
    assert set(out) == {"seg"} and out["seg"].shape == (2, 3, 8, 8)
    assert not any(p.requires_grad for p in rec.parameters()) and not rec.training
    assert len(shared_parameters(seg)) == 2  # the segmentation conv's weight and bias only
    with pytest.raises(ValueError, match="key"):
        DictOutput(torch.nn.Identity(), "image")


def test_merged_table_names_the_vldun_settings_of_a_row_trained_unlike_the_stated_ones():
    conv = {"lr_scheduler": "s", "dc_cascades": 4, "overrides": {"dc_cascades": 4}}
    unet = {**conv, "seg_decoder": "unet", "lambda_pre_dc": 1.0, "overrides": {"dc_cascades": 4, "seg_decoder": "unet"}}
    old = _run_file({"rec_unet": {}, "vldun": {}, "vldun_dc": {}}, 300, recipe=conv)  # before seg_decoder existed
    new = _run_file({"vldun_dc": {}}, 300, recipe=unet)
    res = combine.merge_runs(
        [combine.select_methods(old, ["rec_unet", "vldun"], "o.json"), new], ["o.json", "n.json"], "l"
    )
    assert res["config"]["recipe"]["seg_decoder"] == "unet"  # the setup states the vldun_dc row's head
    assert res["merged_from"][0]["vldun_settings"] == {"seg_decoder": "conv", "lambda_pre_dc": 0.0}
    assert "vldun_settings" not in res["merged_from"][1]
    line = report._merged_source_line(res["merged_from"][0])
    assert line.endswith(
        "git `g300`; its VL-DUN rows were trained with seg_decoder='conv', lambda_pre_dc=0.0 "
        "(the setup above states the values of the `vldun_dc` row)"
    )
    assert "trained with" not in report._merged_source_line(res["merged_from"][1])
    # a source without VL-DUN rows has nothing to say
    unets_only = combine.merge_runs(
        [combine.select_methods(old, ["rec_unet"], "o.json"), new], ["o.json", "n.json"], "l"
    )
    assert "vldun_settings" not in unets_only["merged_from"][0]


def test_merge_ignores_vldun_only_recipe_values_but_not_the_rest():
    recipe = {"learning_rate": 1e-3, "lambda_rec": 10.0, "rec_loss": "mse", "overrides": {}}
    unets = _run_file({"rec_unet": {"iterations": 300}}, 300, recipe=recipe)  # written before task_balance existed
    joint = _run_file({"vldun": {"iterations": 300}}, 300, recipe={**recipe, "task_balance": "gradnorm"})
    res = combine.merge_runs([unets, joint], ["u.json", "j.json"], "label")
    assert set(res["methods"]) == {"rec_unet", "vldun"}
    other = _run_file({"vldun": {"iterations": 300}}, 300, recipe={**recipe, "lambda_rec": 150.0})
    with pytest.raises(ValueError, match="recipe"):
        combine.merge_runs([unets, other], ["u.json", "j.json"], "label")


def test_merge_reads_a_missing_dice_ce_kwargs_as_the_default():
    recipe = {"learning_rate": 1e-3, "lambda_rec": 1.0, "rec_loss": "mse", "overrides": {}}
    old = _run_file({"rec_unet": {"iterations": 300}}, 300, recipe=recipe)  # written before the knob existed
    new = _run_file({"vldun": {"iterations": 300}}, 300, recipe={**recipe, "dice_ce_kwargs": {}})
    assert set(combine.merge_runs([old, new], ["o.json", "n.json"], "label")["methods"]) == {"rec_unet", "vldun"}
    loss = {"dice_ce_kwargs": {"batch": True}}
    batch = _run_file({"vldun": {}}, 300, recipe={**recipe, **loss, "overrides": loss})
    with pytest.raises(ValueError, match="recipe"):  # a different segmentation loss: not the same recipe
        combine.merge_runs([_run_file({"sequential": {}}, 300, recipe=recipe), batch], ["o.json", "b.json"], "l")


def test_merge_lets_restoration_only_rows_join_runs_with_another_segmentation_loss():
    recipe = {"learning_rate": 1e-3, "rec_loss": "mse", "dice_ce_kwargs": {}, "overrides": {}}
    loss = {"dice_ce_kwargs": {"batch": True}}
    rec_only = _run_file({"zero_filled": {}, "rec_unet": {}, "varnet": {}}, 300, recipe=recipe)
    joint = _run_file({"vldun": {}}, 300, recipe={**recipe, **loss, "overrides": loss})
    seq = _run_file({"sequential": {}}, 300, recipe={**recipe, **loss, "overrides": loss})
    for runs in ([rec_only, joint, seq], [joint, rec_only, seq]):
        res = combine.merge_runs(runs, ["a", "b", "c"], "l")
        assert set(res["methods"]) == {"zero_filled", "rec_unet", "varnet", "vldun", "sequential"}
        # the table states the loss its segmenting rows trained with
        assert res["config"]["recipe"]["dice_ce_kwargs"] == {"batch": True}
        assert res["config"]["recipe"]["overrides"] == loss
    with pytest.raises(ValueError, match=r"c: config recipe"):  # two segmenting runs must agree on the loss
        combine.merge_runs([rec_only, joint, _run_file({"sequential": {}}, 300, recipe=recipe)], ["a", "b", "c"], "l")
    with pytest.raises(ValueError, match=r"b: config recipe"):  # the other recipe values still count
        lr = {**recipe, **loss, "learning_rate": 1.0}
        combine.merge_runs([rec_only, _run_file({"vldun": {}}, 300, recipe=lr)], ["a", "b"], "l")


def test_grad_probe_leaves_the_batch_norm_statistics_alone():
    from types import SimpleNamespace

    from benchmarks.quality.recipe import GradProbe
    from scripts.workflows.engines import PrepareVLDUNBatch
    from scripts.workflows.losses import VLDUNLoss

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.trunk = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.BatchNorm2d(4))
            self.rec_head, self.seg_head = torch.nn.Conv2d(4, 1, 1), torch.nn.Conv2d(4, 3, 1)

        def forward(self, x):
            z = self.trunk(x)
            return {"restored": x + self.rec_head(z), "seg": self.seg_head(z)}

    torch.manual_seed(0)
    net = Net().train()
    batch = {
        "image": torch.rand(2, 1, 8, 8),
        "target": torch.rand(2, 1, 8, 8),
        "label": torch.randint(0, 3, (2, 1, 8, 8)),
    }
    engine = SimpleNamespace(
        network=net, loss_function=VLDUNLoss(), prepare_batch=PrepareVLDUNBatch(), non_blocking=False,
        state=SimpleNamespace(batch=batch, device=None, iteration=1),
    )  # fmt: skip
    before = {k: v.clone() for k, v in net.state_dict().items()}
    probe = GradProbe(1)
    probe(engine)
    assert probe.records[0][1]["rec"] > 0 and probe.records[0][1]["seg"] > 0
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


def test_dice_gap_closed_is_measured_between_the_degraded_and_clean_input_unets():
    from benchmarks.quality.report import dice_gap_closed

    methods = {
        "seg_unet_degraded": {"dice_mean": 0.4},
        "seg_unet_clean": {"dice_mean": 0.6},
        "sequential": {"dice_mean": 0.5, "psnr_mean": 20.0},
        "vldun": {"dice_mean": 0.35},
        "rec_unet": {"psnr_mean": 20.0},
    }
    closed = dice_gap_closed(methods)
    assert closed == pytest.approx({"sequential": 0.5, "vldun": -0.25})
    assert dice_gap_closed({**methods, "seg_unet_clean": {"dice_mean": 0.4}}) == {}  # no gap: nothing to close
    assert dice_gap_closed({k: v for k, v in methods.items() if k != "seg_unet_clean"}) == {}

    def run(seed, joint):
        ms = {k: dict(v) for k, v in methods.items()}
        ms["vldun"]["dice_mean"] = joint
        config = {"seed": 0, "train_seed": seed, "size": 32, "batch_size": 2, "iterations": 2, "lr": 1e-3}
        return {"dataset": "d", "degradation": "radial:60", "title": "t", "budget_label": "b", "config": config,
                "methods": ms}  # fmt: skip

    md = combine.render_seed_summary([run(0, 0.35), run(1, 0.55)], ["a.json", "b.json"])
    assert "## Dice gap closed, per seed" in md
    assert "| `vldun` | -25% | +75% |" in md and "| `sequential` | +50% | +50% |" in md


def test_trace_grads_records_each_module_and_batch_kind_and_stops_where_told(tmp_path, capsys):
    """benchmarks/trace_grads.py: the same benchmark run, one record per optimiser step (blind or measured batch,
    loss terms, per-module gradient norms) up to --stop-at, then the benchmark's own evaluation and results."""
    from benchmarks import trace_grads
    from scripts.workflows import engines

    assert trace_grads.module_group("stages.enc1.amgdm.step_size") == "stages.enc1"
    assert trace_grads.module_group("dc_cascades.blocks.1.model.unet.conv_0.weight") == "dc_cascades.blocks.1"
    assert trace_grads.module_group("rec_head.weight") == "rec_head"
    data = _slice_folder(tmp_path / "synth")
    out = tmp_path / "trace.json"
    assert trace_grads.main([
        "--stop-at", "3", "--trace-out", str(out), "--",
        "--datasets", f"{data}@cartesian:4:0.08", "--modality", "MRI", "--methods", "vldun_dc", "--size", "32",
        "--iterations", "5", "--batch-size", "2", "--preset", "tiny", "--out-dir", str(tmp_path / "out"), "--tag",
        "t", "--log-every", "0", "--set", "measurement_dropout=0.5", "--set", "dc_cascades=1",
        "--set", "dc_cascade_features=[4,4,4,4,4,4]",
    ]) == 0  # fmt: skip
    assert engines.VLDUNTrainer.__name__ == "VLDUNTrainer"  # the benchmark's trainer is put back
    records = json.loads(out.read_text())
    assert [r["iteration"] for r in records] == [1, 2, 3]
    assert all(isinstance(r["measured"], bool) and "loss_rec" in r["losses"] for r in records)
    for r in records:  # measured batches train the pre-projection estimate too, blind ones have none
        assert ("loss_pre_dc" in r["losses"]) == r["measured"]
    assert {"rec_head", "seg_head", "stages.enc1", "dc_cascades.blocks.0"} <= set(records[-1]["grad_norms"])
    res = json.loads((tmp_path / "out" / "quality_t.json").read_text())
    assert res["methods"]["vldun_dc"]["iterations"] == 3 and np.isfinite(res["methods"]["vldun_dc"]["psnr_mean"])
    logged = trace_grads.parse_log(capsys.readouterr().out.splitlines())  # the log reads back as the records
    assert [(r["iteration"], r["measured"]) for r in logged] == [(r["iteration"], r["measured"]) for r in records]
    assert logged[0]["losses"]["loss_rec"] == pytest.approx(records[0]["losses"]["loss_rec"], rel=1e-3)
    table = trace_grads.summarize(records, window=2).splitlines()
    assert len(table) == 4 and table[2].startswith("| 1-2 | ") and table[3].startswith("| 3-3 | ")


def test_cpu_name_reads_the_cpuinfo_model_line_and_falls_back_without_it(tmp_path, monkeypatch):
    from benchmarks import _machine

    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 9999 64-Core Processor\n")
    monkeypatch.setattr(_machine, "CPUINFO", info)
    assert _machine.cpu_name() == "AMD EPYC 9999 64-Core Processor"
    assert report.machine()["cpu"] == "AMD EPYC 9999 64-Core Processor"  # the quality benchmark's record uses it

    monkeypatch.setattr(_machine, "CPUINFO", tmp_path / "absent")  # not Linux: no cpuinfo
    monkeypatch.setattr(_machine.platform, "processor", lambda: "")
    assert _machine.cpu_name("unknown CPU") == "unknown CPU"
    monkeypatch.setattr(_machine.platform, "processor", lambda: "arm")
    assert _machine.cpu_name("unknown CPU") == "arm"
