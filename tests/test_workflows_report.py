"""Evaluation report (panels, per-stage images, metrics summary), labelled metric CSVs, run folders and records,
inference progress and summary, and the MLflow handler lookup through public APIs."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch
from ignite.engine import Engine, Events
from monai.data import DataLoader, Dataset
from monai.handlers import MeanDice, from_engine
from monai.transforms import Activationsd, AsDiscreted, Compose

from scripts.workflows.checkpoint import BestModelSaver
from scripts.workflows.engines import IterationLossTag, VLDUNEvaluator, VLDUNTrainer, _mlflow_handlers
from scripts.workflows.progress import InferenceProgress
from scripts.workflows.report import VisualReportHandler, render_panel
from scripts.workflows.runs import RunFolder, executed_config, new_run_dir, run_record
from scripts.workflows.summary import LabelledMetricsSaver, MetricsTable, slice_metrics


class StageNet(torch.nn.Module):
    """Identity 'restoration' and a threshold segmentation, with VL-DUN's stage-head switches: with
    ``return_stages`` it returns one image per stage (the input scaled by k / 3)."""

    def __init__(self, stage_heads: bool = True):
        super().__init__()
        self.p = torch.nn.Parameter(torch.zeros(1))
        self.has_stage_heads = stage_heads
        self.return_stages = False
        self.output = "dict"
        self.stages = torch.nn.ModuleDict({n: torch.nn.Identity() for n in ("enc1", "latent", "dec1")})
        self.calls_with_stages = 0

    def forward(self, x):
        s = (x - 0.5) * 100
        out = {"restored": x + self.p, "seg": torch.cat([-s, s], 1), "modality_logits": torch.zeros(x.shape[0], 2)}
        if self.return_stages:
            self.calls_with_stages += 1
            out["stages"] = [x * k / 3 for k in (1, 2, 3)]
        return out


def _data(n=4, size=16):
    g = torch.Generator().manual_seed(0)
    items = []
    for i in range(n):
        img = torch.rand(1, size, size, generator=g)
        items.append(
            {
                "image": img,
                "target": (img + 0.05).clamp(0, 1),
                "label": (img > 0.5).float(),
                "modality": i % 2,
                "sample_id": f"case{i // 2}_{'mri' if i % 2 == 0 else 'ct'}_s00{i % 2}",
            }
        )
    return items


def _evaluator(net, handlers, data=None):
    return VLDUNEvaluator(
        device=torch.device("cpu"),
        val_data_loader=DataLoader(Dataset(data or _data()), batch_size=1),
        network=net,
        postprocessing=Compose(
            [Activationsd("pred", softmax=True), AsDiscreted(["pred", "label"], argmax=[True, False], to_onehot=2)]
        ),
        key_val_metric={"dice": MeanDice(include_background=False, output_transform=from_engine(["pred", "label"]))},
        val_handlers=handlers,
    )


def test_slice_metrics_match_the_definitions():
    t = torch.full((1, 16, 16), 0.5)
    item = {"image": t + 0.1, "restored": t + 0.01, "target": t}
    lab = torch.zeros(1, 16, 16)
    lab[0, :8] = 1
    item["label"], item["pred"] = lab, lab.clone()
    item["pred"][0, :4] = 0
    m = slice_metrics(item, num_classes=3)
    assert m["psnr_input"] == pytest.approx(20.0, abs=1e-3) and m["psnr"] == pytest.approx(40.0, abs=1e-3)
    assert m["dice_1"] == pytest.approx(2 * 64 / (64 + 128)) and math.isnan(m["dice_2"]), "class 2 is absent"
    assert 0 < m["ssim_input"] <= m["ssim"] <= 1


def test_metrics_table_summarises_per_modality_with_class_names(tmp_path):
    table = MetricsTable(["background", "RV", "Myo"])
    table.add("MRI", "a_s000", {"psnr_input": 20, "psnr": 30, "dice_1": 0.5, "dice_2": math.nan})
    table.add("MRI", "a_s001", {"psnr_input": 22, "psnr": 32, "dice_1": 0.7, "dice_2": 0.9})
    table.add("CT", "b_s000", {"psnr_input": 25, "psnr": 26, "dice_1": 0.1, "dice_2": 0.2})
    s = table.summary()
    assert s["MRI"]["slices"] == 2 and s["MRI"]["psnr"] == pytest.approx(31)
    assert s["MRI"]["dice"] == {"RV": pytest.approx(0.6), "Myo": pytest.approx(0.9)}, "NaN (absent) is skipped"
    assert s["all"]["slices"] == 3
    console = table.console()
    assert "Dice RV" in console and "21.00 -> 31.00" in console and len(console.splitlines()) == 5
    rows = list(csv.reader(table.write_csv(tmp_path / "s.csv").open()))
    assert (
        rows[0][:2] == ["modality", "slices"]
        and "dice_Myo" in rows[0]
        and [r[0] for r in rows[1:]]
        == [
            "MRI",
            "CT",
            "all",
        ]
    )
    assert "| MRI | 2 |" in table.markdown(notes=["weights: x"])


def test_labelled_metrics_saver_writes_a_header_and_class_names(tmp_path):
    data = _data()
    for d in data:
        d["label"] = (d["image"] * 3).floor().clamp(0, 2)
    saver = LabelledMetricsSaver(
        save_dir=str(tmp_path),
        metrics="*",
        metric_details=["dice"],
        summary_ops=["mean"],
        class_names=["background", "RV", "Myo"],
    )
    ev = VLDUNEvaluator(
        device=torch.device("cpu"),
        val_data_loader=DataLoader(Dataset(data), batch_size=1),
        network=StageNet(),
        postprocessing=Compose([AsDiscreted(["label"], to_onehot=3), AsDiscreted(["pred"], argmax=True, to_onehot=3)]),
        key_val_metric={"dice": MeanDice(include_background=False, output_transform=from_engine(["pred", "label"]))},
        val_handlers=[saver],
    )
    ev.run()
    lines = (tmp_path / "metrics.csv").read_text().splitlines()
    assert lines[0] == "metric,value" and lines[1].startswith("dice,")
    assert (tmp_path / "dice_raw.csv").read_text().splitlines()[0] == "filename,RV,Myo,mean"
    assert [r[0] for r in csv.reader((tmp_path / "dice_summary.csv").open())] == ["class", "RV", "Myo", "mean"]
    ev.run()  # a second epoch rewrites the files: still one header
    assert (tmp_path / "metrics.csv").read_text().count("metric,value") == 1


def test_report_draws_stage_images_when_the_network_has_stage_heads(tmp_path, capsys):
    net = StageNet(stage_heads=True)
    handler = VisualReportHandler(tmp_path / "report", num_cases=1, class_names=["bg", "fg"], modalities=["MRI", "CT"])
    _evaluator(net, [handler]).run()
    pngs = sorted((tmp_path / "report").glob("*.png"))
    assert [p.name.split("_")[0] for p in pngs] == ["CT", "MRI"], "one case per modality"
    assert net.calls_with_stages == 2 and net.return_stages is False, "one extra forward per panel, then reset"
    out = capsys.readouterr().out
    assert "MRI" in out and "Dice fg" in out and str(tmp_path / "report" / "summary.md") in out
    plain = VisualReportHandler(tmp_path / "plain", num_cases=1, modalities=["MRI", "CT"])
    _evaluator(StageNet(stage_heads=False), [plain]).run()
    plain_png = sorted((tmp_path / "plain").glob("*.png"))[0]
    from PIL import Image

    # the stage row doubles the panel height
    assert Image.open(pngs[0]).size[1] > 1.5 * Image.open(plain_png).size[1]


def test_render_panel_rejects_an_item_without_images(tmp_path):
    with pytest.raises(ValueError, match="nothing to draw"):
        render_panel({"modality": 0}, tmp_path / "x.png")


def test_report_loads_the_best_checkpoint_only_when_this_run_wrote_it(tmp_path):
    run_dir = tmp_path / "run1"
    best = StageNet()
    with torch.no_grad():
        best.p.fill_(0.25)
    weights = tmp_path / "model.pt"
    saver = BestModelSaver(tmp_path, best, record={"run_dir": str(run_dir)})
    engine = Engine(lambda e, b: None)
    engine.state.metrics, engine.state.key_metric_name, engine.state.epoch = {"dice": 0.5}, "dice", 3
    saver(engine)
    record = json.loads((tmp_path / "model.pt.json").read_text())
    assert record["run_dir"] == str(run_dir) and record["metrics"] == {"dice": 0.5} and record["epoch"] == 3

    net = StageNet(stage_heads=False)
    handler = VisualReportHandler(tmp_path / "r", weights=weights, run_dir=run_dir)
    _evaluator(net, [handler]).run()
    assert float(net.p) == 0.25 and "best checkpoint of this run" in handler.notes[0]
    other = StageNet(stage_heads=False)
    handler = VisualReportHandler(tmp_path / "r2", weights=weights, run_dir=tmp_path / "another_run")
    _evaluator(other, [handler]).run()
    assert float(other.p) == 0.0 and "final weights" in handler.notes[0]


def test_new_run_dir_never_reuses_a_folder(tmp_path):
    a = new_run_dir(tmp_path, "demo")
    b = new_run_dir(tmp_path, "demo")
    c = new_run_dir(tmp_path, None)
    assert a.endswith("demo") and b.endswith("demo-2") and len(set([a, b, c])) == 3
    with pytest.raises(ValueError, match="plain folder name"):
        new_run_dir(tmp_path, "../escape")


def test_executed_config_and_run_folder_from_a_bundle_command_line(tmp_path):
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"epochs": 6, "net": {"dim": 8}}))
    argv = ["/x/monai/bundle/__main__.py", "run", "training", "--config_file", str(cfg), "--epochs", "2"]
    argv += ["--net#dim", "4"]
    config, files = executed_config(argv)
    assert config["epochs"] == 2 and config["net"]["dim"] == 4 and files == [str(cfg)]
    assert executed_config(["pytest"]) is None
    folder = RunFolder(tmp_path / "run", argv=argv)
    folder.write()
    assert json.loads((tmp_path / "run" / "config.json").read_text())["epochs"] == 2
    assert "--epochs 2" in (tmp_path / "run" / "command.txt").read_text()
    in_process = RunFolder(tmp_path / "run2", fallback_files=str(cfg), argv=["monailabel"])
    saved = json.loads(in_process.write().read_text())
    assert saved["epochs"] == 6 and "without the caller's overrides" in saved["_run_note_"]


def test_run_record_names_the_datalist_only_when_the_cases_came_from_it(tmp_path):
    (tmp_path / "a.nii.gz").write_bytes(b"")
    dl = tmp_path / "datalist.json"
    dl.write_text(json.dumps({"training": [{"image": "a.nii.gz", "label": "a.nii.gz"}]}))
    from_list = run_record(tmp_path / "r", dl, [{"image": str(tmp_path / "a.nii.gz")}], [])
    assert from_list["datalist"] == str(dl) and from_list["run_name"] == "r" and from_list["train_cases"] == 1
    given = run_record(tmp_path / "r", dl, [{"image": "/elsewhere/b.nii.gz"}], [])
    assert given["datalist"] is None and "given by the caller" in given["data"]


def test_inference_progress_reports_volumes_eta_files_and_failures(tmp_path, capsys):
    class Screen:
        errors = ["/data/bad.nii.gz: cannot be read (truncated)"]

    vols = [{"image": torch.zeros(1, 4, 4, 5)}, {"image": torch.zeros(1, 4, 4, 3)}]

    def step(engine, batch):
        (tmp_path / f"v{engine.state.iteration}_seg.nii.gz").write_bytes(b"x")
        return {}

    engine = Engine(step)
    progress = InferenceProgress(tmp_path, screen=Screen(), slice_axis=-1)
    progress.attach(engine)
    lines = []
    engine.add_event_handler(Events.ITERATION_COMPLETED, lambda e: lines.append(progress.slices))
    engine.run(vols)
    assert lines == [5, 8] and progress.volumes == 2
    out = capsys.readouterr().out
    assert "2 volume(s), 8 slice(s)" in out and "s/slice" in out
    assert "written: 2 file(s)" in out and "v1_seg.nii.gz" in out
    assert "failed: 1 input(s):" in out and "bad.nii.gz: cannot be read" in out


def test_mlflow_handler_is_found_through_the_handlers_the_engine_was_built_with(tmp_path):
    from monai.handlers import MLFlowHandler

    mlflow = MLFlowHandler(tracking_uri=f"sqlite:///{tmp_path}/m.db", tag_name="train_loss")
    tag = IterationLossTag("train_loss_iter")
    trainer = VLDUNTrainer(
        device=torch.device("cpu"),
        max_epochs=1,
        train_data_loader=DataLoader(Dataset([]), batch_size=1),
        network=StageNet(),
        optimizer=torch.optim.SGD(StageNet().parameters(), lr=0.1),
        loss_function=lambda p, t: torch.zeros(()),
        train_handlers=[mlflow, tag],
    )
    assert _mlflow_handlers(trainer) == [mlflow]
    tag(trainer)
    assert mlflow.tag_name == "train_loss_iter"
    plain = Engine(lambda e, b: None)
    mlflow.attach(plain)
    assert _mlflow_handlers(plain) == [], "an engine that does not list its handlers has none to offer"


def test_summary_numbers_are_finite_on_a_real_evaluation(tmp_path):
    handler = VisualReportHandler(tmp_path, num_cases=2, modalities=["MRI", "CT"])
    _evaluator(StageNet(stage_heads=False), [handler]).run()
    rows = list(csv.reader((tmp_path / "summary.csv").open()))
    values = [float(v) for r in rows[1:] for v in r[2:] if v]
    assert values and all(np.isfinite(values))


def test_monai_label_save_without_validation_records_the_run(tmp_path):
    from scripts.serving import SaveIfNotValidated

    record = run_record(tmp_path / "eval" / "ml-run", None, [{"image": "/datastore/a.nii.gz"}], [])
    saver = SaveIfNotValidated(tmp_path / "models", torch.nn.Linear(2, 2), validator=None, record=record)
    engine = Engine(lambda e, b: None)
    engine.state.epoch = 1
    saver(engine)
    rec = json.loads((tmp_path / "models" / "model.pt.json").read_text())
    assert rec["run_name"] == "ml-run" and rec["datalist"] is None and rec["train_cases"] == 1
    assert rec["metric"] is None and "SaveIfNotValidated" in rec["saved_by"]
