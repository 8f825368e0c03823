"""End-to-end: the real CLI (``python -m monai.bundle run ...`` in subprocesses, from the repository root) with the
real VL-DUN network at its ``tiny`` preset on small synthetic demo volumes.

train 2 epochs (with ``--tracking mlflow``) -> checkpoints -> MLflow run read back -> same seed, same results ->
evaluate (CSVs, report) -> inference (shape + affine) including ITK/PNG inputs and bad inputs -> resume continues at
the next epoch -> CLIP fine-tuning and its weights loaded by training -> 2-process DDP training (gloo, CPU).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
TRAIN = "bundle/configs/train.json"
TINY = [
    "--preset", "tiny",
    "--patch_size", "[32,32]",
    "--batch_size", "4",
    "--train_slices_per_volume", "2",
    "--val_slices_per_volume", "2",
    "--progress_bar", "false",
    "--num_threads", "1",
]  # fmt: skip
DEMO = ["--num_cases", "6", "--shape", "[32,32,6]"]


def run_cli(args: list[str], timeout: int = 600, torchrun: bool = False) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    head = (
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1", "--nproc_per_node=2"]
        if torchrun
        else [sys.executable]
    )
    cmd = head + ["-m", "monai.bundle", "run", *args]
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    res.log = res.stdout + res.stderr  # type: ignore[attr-defined]
    return res


def demo_args(demo: Path, key: str = "datalist") -> list[str]:
    out = ["--demo_dir", str(demo)]
    for i in range(0, len(DEMO), 2):
        out += [f"--{key}#{DEMO[i][2:]}", DEMO[i + 1]]
    return out


def train_args(demo: Path, out: Path, *extra: str) -> list[str]:
    return [
        "training",
        "--config_file",
        TRAIN,
        "--ckpt_dir",
        str(out / "models"),
        "--output_dir",
        str(out / "eval"),
        *demo_args(demo),
        *TINY,
        *extra,
    ]


def run_folder(root: Path) -> Path:
    """The newest run folder under ``root`` (every run writes into ``<output_dir>/<run_name>``)."""
    runs = sorted((p for p in root.iterdir() if p.is_dir() and (p / "config.json").is_file()), key=os.path.getmtime)
    assert runs, f"no run folder under {root}"
    return runs[-1]


def epoch_metrics(log: str) -> dict[int, str]:
    """'Epoch[k] Metrics -- ...' lines of the trainer and validator, by epoch (joined)."""
    out: dict[int, str] = {}
    for m in re.finditer(r"Epoch\[(\d+)\] Metrics -- (.*)", log):
        out[int(m.group(1))] = out.get(int(m.group(1)), "") + m.group(2).strip() + " "
    return out


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("e2e")


@pytest.fixture(scope="module")
def trained(work):
    out = work / "run_a"
    # validation every epoch (train.json validates every 2nd): the tracking tests read a two-step series
    res = run_cli(
        train_args(
            work / "demo", out, "--epochs", "2", "--val_interval", "1", "--tracking", "mlflow", "--run_name", "e2e_a"
        )
    )
    assert res.returncode == 0, res.log[-5000:]
    return out, res


def test_training_writes_checkpoints_and_logs_every_loss_term(trained):
    out, res = trained
    best = torch.load(out / "models" / "model.pt", weights_only=True)  # plain state_dict, MONAI Label-loadable
    assert all(isinstance(v, torch.Tensor) for v in best.values())
    assert any(k.startswith("clip_prior.") for k in best) and any(k.startswith("seg_head") for k in best)
    latest = torch.load(out / "models" / "checkpoint_latest.pt", weights_only=True)
    assert set(latest) == {"model", "optimizer", "lr_scheduler", "trainer"}
    assert latest["trainer"]["iteration"] == 2 * latest["trainer"]["epoch_length"]
    metrics = epoch_metrics(res.log)
    assert set(metrics) == {1, 2}
    # `--progress_bar false` reaches the config as the string "false" (scripts.flags): the bar must be off
    assert not re.search(r"Epoch \[\d+/\d+\]: \[", res.log)
    for term in ["train_loss_rec", "train_loss_seg", "train_loss_mod", "train_loss_deg", "val_mean_dice", "val_psnr"]:
        assert term in metrics[2], metrics[2]


def test_training_ends_with_a_report_of_the_best_checkpoint_in_its_run_folder(trained):
    out, res = trained
    run = out / "eval" / "e2e_a"  # --run_name names the folder (and the MLflow run)
    assert (run / "config.json").is_file() and "--run_name e2e_a" in (run / "command.txt").read_text()
    assert json.loads((run / "config.json").read_text())["epochs"] == 2, "the executed config, overrides applied"
    pngs = sorted((run / "report").glob("*.png"))
    assert {p.name.split("_")[0] for p in pngs} == {"MRI", "CT"} and all(p.stat().st_size > 5000 for p in pngs)
    assert "best checkpoint of this run" in (run / "report" / "summary.md").read_text()
    assert "PSNR input -> restored" in res.stdout and str(run / "report" / "summary.csv") in res.stdout
    record = json.loads((out / "models" / "model.pt.json").read_text())
    assert record["run_name"] == "e2e_a" and record["config"] == str(run / "config.json")
    assert record["datalist"].endswith("datalist.json") and "val_psnr" in record["metrics"]


def test_mlflow_run_can_be_read_back(trained):
    from mlflow.tracking import MlflowClient

    out, _ = trained
    db = out / "eval" / "mlruns.db"
    assert db.is_file(), "the default MLflow store is a SQLite file inside the output folder"
    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    exp = client.get_experiment_by_name("monai_experiment")
    runs = client.search_runs([exp.experiment_id])
    run = next(r for r in runs if r.info.run_name == "e2e_a")
    keys = set(run.data.metrics)
    for k in ["train_loss", "train_loss_rec", "train_loss_seg", "train_loss_mod", "train_loss_deg"]:
        assert k in keys, keys
    for k in ["val_mean_dice", "val_mean_iou", "val_psnr", "val_ssim"]:
        assert k in keys, keys
    # every key is one series with one step unit: epochs for the epoch means and validation metrics, iterations
    # for the per-iteration loss and learning rate (train_loss once held both, and its chart zig-zagged)
    iterations = 2 * torch.load(out / "models" / "checkpoint_latest.pt", weights_only=True)["trainer"]["epoch_length"]
    for k in keys:
        steps = [m.step for m in client.get_metric_history(run.info.run_id, k)]
        per_iteration = k.endswith("_iter") or k.startswith("lr_group_")
        expected = list(range(1, iterations + 1)) if per_iteration else [1, 2]
        assert steps == expected, (k, steps)  # MLflow returns the history in logging order
    assert "train_loss_iter" in keys, keys
    params = run.data.params
    declared = json.loads((ROOT / TRAIN).read_text())["lambda_rec"]
    assert params["preset"] == "tiny" and float(params["lambda_rec"]) == declared and params["epochs"] == "2"
    assert params["seg_hidden"] == "8" and params["grad_clip_norm"] == "None", "widths and knobs of the run"
    assert params["dc_cascades"] == str(json.loads((ROOT / TRAIN).read_text())["dc_cascades"])
    artifacts = [a.path for a in client.list_artifacts(run.info.run_id)]
    assert any(a.startswith("config_") and a.endswith(".json") for a in artifacts), artifacts


def test_tensorboard_tags_are_one_series_each(trained):
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    out, _ = trained
    steps: dict[str, list[int]] = {}
    for f in sorted((out / "eval" / "e2e_a").glob("events.out.tfevents.*")):  # one file per writer (trainer, validator)
        for event in EventFileLoader(str(f)).Load():
            for value in event.summary.value:
                steps.setdefault(value.tag, []).append(event.step)
    iterations = 2 * torch.load(out / "models" / "checkpoint_latest.pt", weights_only=True)["trainer"]["epoch_length"]
    for tag, s in steps.items():
        expected = list(range(1, iterations + 1)) if tag.endswith("_iter") else [1, 2]
        assert s == expected, (tag, s)
    assert "train_loss" in steps and "train_loss_iter" in steps and "val_mean_dice" in steps, sorted(steps)


def test_same_seed_gives_the_same_losses_and_metrics(trained, work):
    out_a, res_a = trained
    out_b = work / "run_b"
    # the same validation interval as run a: each validation draws a DataLoader seed from the global RNG
    res_b = run_cli(train_args(work / "demo", out_b, "--epochs", "2", "--val_interval", "1"))
    assert res_b.returncode == 0, res_b.log[-5000:]
    assert epoch_metrics(res_a.log) == epoch_metrics(res_b.log)
    a = torch.load(out_a / "models" / "checkpoint_latest.pt", weights_only=True)["model"]
    b = torch.load(out_b / "models" / "checkpoint_latest.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_evaluate_reports_metrics_per_case_and_panels(trained, work):
    out, _ = trained
    res = run_cli(
        [
            "--config_file",
            "['bundle/configs/train.json','bundle/configs/evaluate.json']",
            "--ckpt_dir",
            str(out / "models"),
            "--output_dir",
            str(out / "evaluation"),
            *demo_args(work / "demo"),
            *TINY,
        ]
    )
    assert res.returncode == 0, res.log[-5000:]
    assert "Restored all variables from" in res.log and "val_mean_dice" in res.log
    ev = run_folder(out / "evaluation")
    assert ev.name.startswith("eval-")
    lines = (ev / "metrics.csv").read_text().splitlines()
    assert lines[0] == "metric,value"
    summary = dict(line.split(",", 1) for line in lines[1:])
    assert {"val_mean_dice", "val_mean_iou", "val_psnr", "val_ssim"} <= set(summary)
    assert 0.0 <= float(summary["val_ssim"]) <= 1.0
    psnr_rows = (ev / "val_psnr_raw.csv").read_text().splitlines()
    assert len(psnr_rows) > 2 and all("_s0" in r for r in psnr_rows[1:])
    assert "mean" in (ev / "val_mean_dice_summary.csv").read_text()
    pngs = list((ev / "report").glob("*.png"))
    assert len(pngs) == 2 and all(p.stat().st_size > 5000 for p in pngs)
    assert (ev / "report" / "summary.md").is_file() and "Dice RV/heart" in res.stdout


def test_two_training_runs_keep_both_folders_and_the_record_names_the_last(work, tmp_path):
    out = tmp_path / "twice"
    for _ in range(2):
        res = run_cli(train_args(work / "demo", out, "--epochs", "1", "--run_name", "same", "--val_interval", "1"))
        assert res.returncode == 0, res.log[-5000:]
    runs = sorted(p.name for p in (out / "eval").iterdir() if p.is_dir())
    assert runs == ["same", "same-2"], runs
    for name in runs:
        assert (out / "eval" / name / "config.json").is_file() and list((out / "eval" / name).glob("events.*"))
        assert list((out / "eval" / name / "report").glob("*.png"))
    assert json.loads((out / "models" / "model.pt.json").read_text())["run_name"] == "same-2"


def _outputs_match_inputs(out_dir: Path, items: list[Path]):
    from monai.transforms import LoadImage

    for src in items:
        stem = src.name.split(".")[0]
        ref = LoadImage(image_only=True)(str(src))
        for kind in ("seg", "restored"):
            f = out_dir / f"{stem}_{kind}.nii.gz"
            assert f.is_file(), f
            img = nib.load(f)
            assert img.shape == tuple(ref.shape), (f, img.shape, ref.shape)
            if len(ref.shape) == 3:
                assert np.allclose(img.affine, ref.affine.numpy(), atol=1e-4), f


def test_inference_writes_segmentation_and_restored_volume_with_the_input_geometry(trained, work):
    out, _ = trained
    res = run_cli(
        [
            "--config_file",
            "bundle/configs/inference.json",
            "--ckpt_dir",
            str(out / "models"),
            "--output_dir",
            str(out / "infer"),
            *demo_args(work / "demo", "demo_datalist"),
            "--preset",
            "tiny",
            "--num_threads",
            "1",
            "--simulate_undersampling",
            "true",
        ]
    )
    assert res.returncode == 0, res.log[-5000:]
    datalist = json.loads((work / "demo" / "datalist.json").read_text())
    items = [work / "demo" / d["image"] for d in datalist["test"]]
    infer = run_folder(out / "infer")
    _outputs_match_inputs(infer, items)
    assert f"inference: volume {len(items)}/{len(items)}" in res.log and "ETA" in res.log
    assert f"{len(items)} volume(s)" in res.stdout and f"written: {2 * len(items)} file(s) in {infer}" in res.stdout
    for src in items:
        seg = nib.load(infer / f"{src.name.split('.')[0]}_seg.nii.gz")
        assert seg.get_data_dtype() == np.uint8 and set(np.unique(seg.get_fdata())) <= {0, 1, 2, 3}


def test_inference_reads_itk_and_png_and_reports_bad_inputs_by_name(trained, work, tmp_path):
    import itk
    from PIL import Image

    out, _ = trained
    datalist = json.loads((work / "demo" / "datalist.json").read_text())
    src = work / "demo" / datalist["test"][0]["image"]
    vol = nib.load(src).get_fdata().astype(np.float32)
    d = tmp_path / "in"
    d.mkdir()
    shutil.copy(src, d / "good.nii.gz")
    itk_img = itk.image_from_array(np.ascontiguousarray(vol.transpose(2, 1, 0)))
    itk_img.SetSpacing([3.0, 3.0, 8.0])
    itk.imwrite(itk_img, str(d / "vol.mha"))
    itk.imwrite(itk_img, str(d / "vol2.nrrd"))
    sl = vol[:, :, 3]
    Image.fromarray(((sl - sl.min()) / (np.ptp(sl) + 1e-6) * 255).astype(np.uint8)).save(d / "slice.png")
    raw = src.read_bytes()
    (d / "truncated.nii.gz").write_bytes(raw[: len(raw) // 3])
    (d / "corrupt.nii.gz").write_bytes(b"\x00garbage" * 64)
    nib.save(nib.Nifti1Image(np.stack([vol, vol], -1), np.eye(4)), str(d / "fourd.nii.gz"))
    bad = vol.copy()
    bad[1, 2, 3] = np.nan
    nib.save(nib.Nifti1Image(bad, np.eye(4)), str(d / "nan.nii.gz"))
    res = run_cli(
        [
            "--config_file",
            "bundle/configs/inference.json",
            "--ckpt_dir",
            str(out / "models"),
            "--output_dir",
            str(tmp_path / "out"),
            "--input_dir",
            str(d),
            "--preset",
            "tiny",
            "--num_threads",
            "1",
        ]
    )
    assert res.returncode != 0, "bad inputs must make the run fail at the end"
    assert "4 input(s) could not be processed (the other 4 were written)" in res.log, res.log[-3000:]
    for name in ["truncated.nii.gz", "corrupt.nii.gz", "fourd.nii.gz", "nan.nii.gz"]:
        assert name in res.log
    assert "NaN" in res.log and "4D" in res.log
    assert "failed: 4 input(s):" in res.stdout and "truncated.nii.gz" in res.stdout.split("failed:")[1]
    written = run_folder(tmp_path / "out")
    _outputs_match_inputs(written, [d / "good.nii.gz", d / "vol.mha", d / "vol2.nrrd", d / "slice.png"])
    # the ITK volume keeps its spacing
    assert np.allclose(nib.load(written / "vol_seg.nii.gz").header.get_zooms(), (3.0, 3.0, 8.0))

    empty = tmp_path / "empty"
    empty.mkdir()
    res = run_cli(["--config_file", "bundle/configs/inference.json", "--input_dir", str(empty), "--preset", "tiny"])
    assert res.returncode != 0 and f"no input images found in '{empty}'" in res.log


def test_resume_continues_at_the_next_epoch(trained, work):
    out, _ = trained
    resumed = work / "run_resume"
    shutil.copytree(out / "models", resumed / "models")
    res = run_cli(train_args(work / "demo", resumed, "--epochs", "3", "--resume", "true"))
    assert res.returncode == 0, res.log[-5000:]
    assert "ResumeHandler: resumed from" in res.log
    assert set(epoch_metrics(res.log)) == {3}, "only epoch 3 runs"
    latest = torch.load(resumed / "models" / "checkpoint_latest.pt", weights_only=True)
    assert latest["trainer"]["iteration"] == 3 * latest["trainer"]["epoch_length"]
    missing = run_cli(train_args(work / "demo", work / "nothing", "--epochs", "1", "--resume", "true"))
    assert missing.returncode != 0 and "checkpoint_latest.pt' does not exist" in missing.log


def test_clip_finetuning_then_training_loads_the_prior(work):
    out = work / "clip"
    res = run_cli(
        [
            "training",
            "--config_file",
            "['bundle/configs/train.json','bundle/configs/clip_finetune.json']",
            "--ckpt_dir",
            str(out / "models"),
            "--output_dir",
            str(out / "eval"),
            *demo_args(work / "demo"),
            *TINY,
            "--epochs",
            "2",
        ]
    )
    assert res.returncode == 0, res.log[-5000:]
    assert "val_modality_acc" in res.log and "val_degradation_acc" in res.log
    prior = torch.load(out / "models" / "clip_prior.pt", weights_only=True)
    assert "modality_head.weight" in prior and "text_features" in prior

    # stage 2 with a frozen learning rate: the network's prior must be exactly the fine-tuned one
    stage2 = work / "stage2"
    res = run_cli(
        train_args(
            work / "demo",
            stage2,
            "--epochs",
            "1",
            "--learning_rate",
            "0.0",
            "--clip_prior_weights",
            str(out / "models" / "clip_prior.pt"),
        )
    )
    assert res.returncode == 0, res.log[-5000:]
    model = torch.load(stage2 / "models" / "model.pt", weights_only=True)
    for k, v in prior.items():
        assert torch.equal(model[f"clip_prior.{k}"], v), k
    # negative control: the default initialisation differs from the fine-tuned prior
    scratch_file = work / "run_a" / "models" / "model.pt"
    if scratch_file.is_file():
        scratch = torch.load(scratch_file, weights_only=True)
        assert not all(torch.equal(scratch[f"clip_prior.{k}"], v) for k, v in prior.items())


def test_multi_gpu_config_trains_with_two_gloo_processes(work):
    out = work / "ddp"
    res = run_cli(
        [
            "training",
            "--config_file",
            "['bundle/configs/train.json','bundle/configs/multi_gpu_train.json']",
            *train_args(work / "demo", out, "--epochs", "2")[3:],
        ],
        torchrun=True,
        timeout=240,
    )
    assert res.returncode == 0, res.log[-5000:]
    assert set(epoch_metrics(res.log)) == {1, 2}
    # rank 0 alone saves, once at the end (the last epoch's save serves COMPLETED too)
    assert res.log.count("LatestCheckpointSaver: epoch 2") == 1, res.log[-5000:]
    # both ranks log into the one folder rank 0 chose
    assert len([p for p in (out / "eval").iterdir() if p.is_dir()]) == 1
    latest = torch.load(out / "models" / "checkpoint_latest.pt", weights_only=True)
    assert not any(k.startswith("module.") for k in latest["model"]), "DDP wrapper must be stripped"
    assert (out / "models" / "model.pt").is_file()


def test_a_label_outside_the_classes_stops_training_naming_file_value_and_num_classes(tmp_path):
    rng = np.random.default_rng(0)
    items = []
    for i in range(4):
        image = rng.random((32, 32, 6)).astype(np.float32)
        label = np.zeros((32, 32, 6), np.uint8)
        label[8:20, 8:20, 1:5] = 1 + i % 3
        if i == 1:
            label[10, 10, 2] = 7  # one stray voxel, as a mislabelled file has
        for kind, arr in (("img", image), ("seg", label)):
            nib.save(nib.Nifti1Image(arr, np.eye(4)), str(tmp_path / f"case{i}_{kind}.nii.gz"))
        items.append({"image": f"case{i}_img.nii.gz", "label": f"case{i}_seg.nii.gz"})
    datalist = tmp_path / "datalist.json"
    datalist.write_text(json.dumps({"training": items[:2], "validation": items[2:3], "test": items[3:]}))
    out = tmp_path / "out"
    args = ["training", "--config_file", TRAIN, "--datalist", str(datalist), "--ckpt_dir", str(out / "models")]
    res = run_cli([*args, "--output_dir", str(out / "eval"), *TINY, "--epochs", "1"])
    assert res.returncode != 0, res.log[-3000:]
    expected = "case1_seg.nii.gz: has label value(s) [7] outside the classes 0..3 (num_classes 4)"
    assert expected in res.log, res.log[-3000:]
    assert "out of bounds" not in res.log


def _slice_folder(root: Path) -> Path:
    """2D uint16 PNG slices of varied size (some smaller than the crop) with a centred 'heart': LV disc (3) inside a
    myocardium ring (2), an RV blob (1) beside it."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for p in range(1, 7):
        for s in range(3):
            h, w = (70, 60) if p % 2 else (40, 46)
            yy, xx = np.mgrid[:h, :w]
            r = np.hypot(yy - h / 2, xx - w / 2)
            lab = np.zeros((h, w), np.uint8)
            lab[r < 9 + s] = 2
            lab[r < 5 + s] = 3
            lab[np.hypot(yy - h / 2, xx - w / 2 - 13) < 4] = 1
            img = (200 + 300 * lab + rng.normal(0, 20, (h, w))).clip(0, 65535).astype(np.uint16)
            for sub, arr in (("images", img), ("labels", lab)):
                (root / sub).mkdir(parents=True, exist_ok=True)
                Image.fromarray(arr).save(root / sub / f"p{p:02d}_slice{s:02d}.png")
    return root


def test_slice_overlay_crops_to_the_roi_and_trains_and_evaluates(work):
    """bundle/configs/acdc_slices.json over train.json (and evaluate.json): 2D PNG slices, centre crop to roi_size
    (padding the small ones), resize to patch_size, 8x Cartesian undersampling; evaluation on the test patients."""
    from scripts.data.prepare import main as prepare

    folder = _slice_folder(work / "slices")
    dl = work / "slices.json"
    args = ["slices", "--input", str(folder), "--output", str(dl), "--modality", "MRI", "-q"]
    assert prepare([*args, "--patient-regex", r"(p\d+)", "--test-ids", "p05,p06", "--val-fraction", "0.25"]) == 0
    out = work / "run_slices"
    common = [
        "--datalist", str(dl), "--ckpt_dir", str(out / "models"), "--preset", "tiny", "--roi_size", "[48,48]",
        "--patch_size", "[24,24]", "--batch_size", "4", "--progress_bar", "false", "--num_threads", "1",
    ]  # fmt: skip
    overlay = "['bundle/configs/train.json','bundle/configs/acdc_slices.json'"
    train = ["training", "--config_file", overlay + "]", "--epochs", "1"]
    res = run_cli([*train, "--output_dir", str(out / "t"), *common])
    assert res.returncode == 0, res.log[-5000:]
    assert "val_psnr_input" in epoch_metrics(res.log)[1]
    evaluate = overlay + ",'bundle/configs/evaluate.json']"
    res = run_cli(["--config_file", evaluate, "--output_dir", str(out / "ev"), *common])
    assert res.returncode == 0, res.log[-5000:]
    ev = run_folder(out / "ev")
    rows = (ev / "val_psnr_raw.csv").read_text().splitlines()[1:]
    assert sorted(r.split("\t")[0].split(",")[0][:3] for r in rows) == ["p05"] * 3 + ["p06"] * 3, rows
    summary = dict(line.split(",", 1) for line in (ev / "metrics.csv").read_text().splitlines()[1:])
    assert float(summary["val_psnr_input"]) > 10 and 0 <= float(summary["val_mean_dice"]) <= 1

    # the pipeline itself: crop + resize, then degradation of the resized slice (so target has patch_size)
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(["bundle/configs/train.json", "bundle/configs/acdc_slices.json"])
    parser.update({"datalist": str(dl), "roi_size": [48, 48], "patch_size": [24, 24], "cache_rate": 0.0})
    sample = parser.get_parsed_content("validate#dataset")[0]
    sample = sample[0] if isinstance(sample, list) else sample
    assert sample["image"].shape == sample["target"].shape == sample["label"].shape == (1, 24, 24)
    assert set(np.unique(sample["label"].numpy())) <= {0, 1, 2, 3} and 3 in np.unique(sample["label"].numpy())
    assert not torch.equal(sample["image"], sample["target"])  # undersampled input, clean target
