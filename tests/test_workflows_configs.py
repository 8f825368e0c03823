"""The JSON workflows as ConfigWorkflows: properties (Model Zoo / MONAI Label contract) and a fast in-process run.

The in-process run swaps the network for a small MONAI UNet with VL-DUN's output dict (``DictUNet``) so that the
config wiring (data, degradation, loss terms, metrics, checkpoints, evaluation reports, 3D inference) is checked in
seconds; the real network runs in ``test_e2e_workflows.py``.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser, ConfigWorkflow

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "bundle" / "configs"
DICT_NET = {"_target_": "tests.test_workflows_engines.DictUNet", "num_classes": "@num_classes"}


def _common(tmp: Path, demo: Path) -> dict:
    return {
        "bundle_root": str(ROOT / "bundle"),
        "ckpt_dir": str(tmp / "models"),
        "output_dir": str(tmp / "eval"),
        "num_threads": None,
    }


def _train_over(tmp: Path, demo: Path, **kw) -> dict:
    return {
        **_common(tmp, demo),
        "demo_dir": str(demo),
        "datalist#num_cases": 6,
        "datalist#shape": [24, 24, 5],
        "preset": "tiny",
        "epochs": 2,
        "patch_size": [24, 24],
        "batch_size": 4,
        "train_slices_per_volume": 2,
        "val_slices_per_volume": 2,
        "progress_bar": False,
        **kw,
    }


def _infer_over(tmp: Path, demo: Path, **kw) -> dict:
    return {
        **_common(tmp, demo),
        "demo_dir": str(demo),
        "demo_datalist#num_cases": 6,
        "demo_datalist#shape": [24, 24, 5],
        "preset": "tiny",
        "output_dir": str(tmp / "infer"),
        **kw,
    }


def _only_run(root: Path, prefix: str = "") -> Path:
    """The one run folder under ``root`` whose name starts with ``prefix`` (every run writes into its own)."""
    runs = [p for p in root.iterdir() if p.is_dir() and p.name.startswith(prefix) and p.name != "inference"]
    assert len(runs) == 1, runs
    return runs[0]


def _wf(files, workflow_type, over):
    files = [str(CONFIGS / f) for f in files]
    return ConfigWorkflow(
        config_file=files if len(files) > 1 else files[0],
        workflow_type=workflow_type,
        meta_file=str(CONFIGS / "metadata.json"),
        logging_file=False,
        **over,
    )


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return tmp_path_factory.mktemp("demo")


@pytest.mark.parametrize(
    "files,kind",
    [(["train.json"], "train"), (["train.json", "evaluate.json"], "train"), (["inference.json"], "infer")],
)
def test_check_properties_is_empty(files, kind, tmp_path, demo):
    over = _infer_over(tmp_path, demo, load_pretrain=False) if kind == "infer" else _train_over(tmp_path, demo)
    wf = _wf(files, kind, over)
    wf.initialize()
    assert wf.check_properties() == []


def test_every_workflow_has_its_run_ids_and_merges():
    for files, ids in [
        (["train.json"], ["run", "training", "initialize"]),
        (["train.json", "evaluate.json"], ["run", "evaluating"]),
        (["train.json", "clip_finetune.json"], ["run", "training"]),
        (["train.json", "multi_gpu_train.json"], ["run", "training", "finalize"]),
        (["train.json", "monailabel.json"], ["run", "training"]),
        (["inference.json"], ["run", "inference", "evaluating"]),
    ]:
        p = ConfigParser()
        p.read_config([str(CONFIGS / f) for f in files])
        for i in ids:
            assert i in p, (files, i)
        p.resolve_macro_and_relative_ids()
        assert p["training" if "training" in p else "run"] == p["run"]
    # MONAI Label's BundleTrainTask (the app's reads train.json + monailabel.json) overrides these ids: they must
    # exist with the expected types
    p = ConfigParser()
    p.read_config([str(CONFIGS / "train.json"), str(CONFIGS / "monailabel.json")])
    assert isinstance(p["train#handlers"], list) and isinstance(p["validate#handlers"], list)
    for i in ["network", "train#dataset#data", "validate#dataset#data", "train#trainer#max_epochs", "device"]:
        assert i in p
    inf = ConfigParser()
    inf.read_config(str(CONFIGS / "inference.json"))
    post = [t["_target_"] for t in inf["postprocessing"]["transforms"]]
    assert post[-1] == "SaveImaged" and "scripts.workflows.io.SaveRestoredd" in post
    assert isinstance(inf["handlers"], list)


def _keys(node) -> set[str]:
    if isinstance(node, dict):
        return set(node).union(*(_keys(v) for v in node.values()))
    return set().union(*(_keys(v) for v in node)) if isinstance(node, list) else set()


def test_fixed_evaluation_seeds_use_one_idiom():
    """Validation (and simulated inference) degradations are seeded per sample by FixedSeedd, in every config."""
    from monai.transforms import OneOf

    from scripts.transforms import ModalityKspaceUndersampled
    from scripts.workflows.slices import FixedSeedd

    for f in CONFIGS.glob("*.json"):
        assert not {"seed_key", "fixed_seed"} & _keys(json.loads(f.read_text())), f.name
    for files, inner in [(["train.json"], ModalityKspaceUndersampled), (["train.json", "clip_finetune.json"], OneOf)]:
        p = ConfigParser()
        p.read_config([str(CONFIGS / f) for f in files])
        t = p.get_parsed_content("validate#degradation")
        assert isinstance(t, FixedSeedd) and isinstance(t.transform, inner), files
        assert t.seed == p["val_mask_seed"] and t.transform is not p.get_parsed_content("train#degradation")
    inf = ConfigParser()
    inf.read_config(str(CONFIGS / "inference.json"))
    inf["simulate_undersampling"] = True
    pre = inf.get_parsed_content("preprocessing").transforms
    (sim,) = [t for t in pre if isinstance(t, FixedSeedd)]
    assert isinstance(sim.transform, ModalityKspaceUndersampled) and sim.seed == inf["simulation_seed"]


@pytest.mark.parametrize("files", [["train.json"], ["train.json", "multi_gpu_train.json"]])
def test_a_validation_pass_leaves_the_training_random_stream_alone(files):
    """Each pass over a DataLoader draws a seed; from the global RNG it would shift every later training batch, so
    that `--val_interval` changed the training. The validation loader has its own generator."""
    p = ConfigParser()
    p.read_config([str(CONFIGS / f) for f in files])
    p["validate#dataset"] = "$[{'image': torch.zeros(1, 4, 4)} for _ in range(3)]"
    if "validate#sampler" in p:
        p["validate#sampler"] = None
    loader = p.get_parsed_content("validate#dataloader", lazy=False)
    torch.manual_seed(0)
    before = torch.random.get_rng_state()
    for _ in range(2):
        assert len(list(loader)) == 3
    assert torch.equal(torch.random.get_rng_state(), before)


def test_train_evaluate_infer_in_process_with_a_small_net(tmp_path, demo):
    # the stand-in UNet has no data-consistency inputs: the blind wiring (DC's own wiring: test_e2e_data_consistency)
    over = _train_over(tmp_path, demo, network_def=DICT_NET, learning_rate=0.01, data_consistency=False)
    wf = _wf(["train.json"], "train", over)
    wf.initialize()
    wf.run()
    wf.finalize()
    trainer = wf.parser.get_parsed_content("train#trainer")
    assert trainer.state.epoch == 2
    metrics = trainer.state.metrics
    assert {"train_loss", "train_loss_rec", "train_loss_seg", "train_loss_mod", "train_loss_deg"} <= set(metrics)
    models = tmp_path / "models"
    best = torch.load(models / "model.pt", weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in best.values()) and "unet.model.0.conv.weight" in best
    latest = torch.load(models / "checkpoint_latest.pt", weights_only=True)
    assert latest["trainer"]["iteration"] == trainer.state.iteration
    record = json.loads((models / "model.pt.json").read_text())
    assert record["metric"] == "val_mean_dice"
    train_run = _only_run(tmp_path / "eval")
    assert record["run_dir"] == str(train_run) and record["run_name"] == train_run.name
    assert record["datalist"] == str(demo / "datalist.json") and record["train_cases"] > 0
    assert set(record["metrics"]) >= {"val_mean_dice", "val_psnr"}
    assert list(train_run.glob("events.out.tfevents.*")), "TensorBoard logs go into the run folder"
    # the end-of-training report: the run's best checkpoint on the validation data
    pngs = sorted((train_run / "report").glob("*.png"))
    assert len(pngs) == 2 and all(p.stat().st_size > 1000 for p in pngs), pngs
    assert {p.name.split("_")[0] for p in pngs} == {"MRI", "CT"}, "one panel per modality at least"
    assert "best checkpoint of this run" in (train_run / "report" / "summary.md").read_text()

    # evaluation: per-case CSVs (named after the slices), a summary and PNG panels
    ev_over = {k: v for k, v in over.items() if k != "val_slices_per_volume"}
    ev_over["save_degraded"] = True
    ev = _wf(["train.json", "evaluate.json"], "train", {**ev_over, "eval_slices_per_volume": 3})
    ev.initialize()
    ev.run()
    out = _only_run(tmp_path / "eval", "eval-")
    rows = list(csv.reader((out / "metrics.csv").open()))
    assert rows[0] == ["metric", "value"], rows[0]
    summary = {row[0]: row for row in rows}
    for key in ["val_mean_dice", "val_mean_iou", "val_psnr", "val_ssim", "val_psnr_input"]:
        assert key in summary, summary
    rows = list(csv.reader((out / "val_psnr_raw.csv").open()))
    assert rows[0][0] == "filename" and rows[1][0].startswith("demo_") and "_s0" in rows[1][0]
    assert len(rows) - 1 == 2 * 3, "2 test volumes x 3 slices"
    dice_rows = list(csv.reader((out / "val_mean_dice_raw.csv").open()))
    assert dice_rows[0] == ["filename", "RV/heart", "myocardium/lung", "LV/lesion", "mean"], dice_rows[0]
    dice_summary = [r[0] for r in csv.reader((out / "val_mean_dice_summary.csv").open())]
    assert dice_summary == ["class", "RV/heart", "myocardium/lung", "LV/lesion", "mean"], dice_summary
    pngs = sorted((out / "report").glob("*.png"))
    assert len(pngs) == 2 and (out / "report" / "index.html").is_file()
    assert all(p.stat().st_size > 1000 for p in pngs)
    assert (out / "report" / "summary.csv").read_text().startswith("modality,slices,psnr_input,psnr,")
    degraded = sorted((out / "degraded").glob("*_degraded.nii.gz"))
    assert len(degraded) == 2 * 3, degraded
    img = nib.load(degraded[0]).get_fdata()
    assert img.shape[:2] == (24, 24) and 0.0 <= img.min() and img.max() <= 1.0
    assert (out / "config.json").is_file()

    # inference on the demo test volumes: NIfTI outputs with the input's shape and affine
    inf = _wf(["inference.json"], "infer", _infer_over(tmp_path, demo, network_def=DICT_NET))
    inf.initialize()
    inf.run()
    infer = _only_run(tmp_path / "infer")
    datalist = json.loads((demo / "datalist.json").read_text())
    for item in datalist["test"]:
        src = nib.load(demo / item["image"])
        stem = Path(item["image"]).name[: -len(".nii.gz")]
        seg = nib.load(infer / f"{stem}_seg.nii.gz")
        rest = nib.load(infer / f"{stem}_restored.nii.gz")
        for out_img in (seg, rest):
            assert out_img.shape == src.shape and np.allclose(out_img.affine, src.affine)
        assert set(np.unique(seg.get_fdata())) <= {0, 1, 2, 3}
        # the restored volume is back in the input's intensity units (HU for CT, scanner units for MRI)
        r, s = rest.get_fdata(), src.get_fdata()
        assert abs(np.median(r) - np.median(s)) < 0.25 * (s.max() - s.min())


@pytest.mark.parametrize("dc", [True, False])
def test_the_end_of_training_report_evaluates_as_validation_does(dc):
    """The report's evaluator must hand the network the measurements exactly when validation does: a report made
    blind of a data-consistency model shows other (worse) numbers than the validation that chose the checkpoint."""
    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "train.json"))
    parser.update({"bundle_root": str(ROOT / "bundle"), "data_consistency": dc})
    val = parser.get_parsed_content("validate#prepare_batch")
    assert val.network_keys == (("kspace", "mask") if dc else ())
    assert val.measurement_dropout == 0.0
    for path in ("validate#evaluator#prepare_batch", "report#evaluator#prepare_batch"):
        assert parser[path].replace("::", "#") == "@validate#prepare_batch", path


def test_dice_ce_kwargs_of_train_json_reach_the_segmentation_loss():
    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "train.json"))
    parser["train_modalities"] = ["MRI"]  # the datalist is not needed to build the loss
    assert parser.get_parsed_content("loss").seg_loss.dice.batch is False  # default: MONAI's per-slice Dice
    parser["dice_ce_kwargs"] = {"batch": True, "include_background": False}
    loss = parser.get_parsed_content("loss", lazy=False)
    assert loss.seg_loss.dice.batch is True and loss.seg_loss.dice.include_background is False


@pytest.mark.parametrize("config", ["train.json", "inference.json"])
def test_seg_head_knobs_default_to_the_preset_and_reach_the_segmentation_head(config):
    """Training and inference must build the same seg head, or weights trained with ``--seg_hidden 64`` (or another
    ``--seg_norm``) would not load into the inference network."""
    parser = ConfigParser()
    parser.read_config(str(CONFIGS / config))
    parser.update({"bundle_root": str(ROOT / "bundle"), "preset": "tiny", "data_consistency": False})
    assert parser.get_parsed_content("seg_hidden") == 8  # the tiny preset's width
    assert isinstance(parser.get_parsed_content("network_def").seg_head[1], torch.nn.BatchNorm2d)
    parser.update({"seg_hidden": 12, "seg_norm": ["instance", {"affine": True}]})
    net = parser.get_parsed_content("network_def", lazy=False)
    assert net.seg_head[0].out_channels == 12 and net.seg_head[-1].in_channels == 12
    assert isinstance(net.seg_head[1], torch.nn.InstanceNorm2d) and net.seg_head[1].affine
    parser.update({"seg_decoder": "unet", "seg_unet_features": [4, 4, 8, 8, 16, 4]})
    net = parser.get_parsed_content("network_def", lazy=False)
    assert net.seg_decoder == "unet" and net.seg_head.final_conv.out_channels == net.num_classes
    assert net.seg_head.conv_0.conv_0.conv.out_channels == 4


def test_seg_unet_dropout_is_a_train_json_knob_that_reaches_the_unet_head():
    """Dropout acts only in training, so inference.json does not need it: its weights load either way."""
    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "train.json"))
    parser.update({"bundle_root": str(ROOT / "bundle"), "preset": "tiny", "data_consistency": False})
    assert parser.get_parsed_content("seg_unet_dropout") == 0.0
    parser.update({"seg_decoder": "unet", "seg_unet_features": [4, 4, 8, 8, 16, 4], "seg_unet_dropout": 0.2})
    net = parser.get_parsed_content("network_def", lazy=False)
    drops = [m.p for m in net.seg_head.modules() if isinstance(m, torch.nn.Dropout)]
    assert drops and set(drops) == {0.2}
    tracked = [h for h in parser["train"]["handlers"] if h["_target_"].endswith("TrackingParamsHandler")]
    assert tracked and tracked[0]["params"]["seg_unet_dropout"] == "@seg_unet_dropout"


def test_lambda_pre_dc_is_a_train_json_knob_that_reaches_the_loss():
    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "train.json"))
    parser.update({"bundle_root": str(ROOT / "bundle")})
    declared = parser.get_parsed_content("lambda_pre_dc")
    assert declared > 0  # on by default: data consistency is on, and its rec head must not drift between blind batches
    parser.update({"lambda_pre_dc": 0.25, "train_modalities": ["MRI"]})
    assert parser.get_parsed_content("loss").weights["pre_dc"] == 0.25
