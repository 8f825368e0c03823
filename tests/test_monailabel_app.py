"""tools/monailabel_app.py: the MONAI Label app folder it prepares and the command it prints (no server here)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
from monai.bundle import ConfigParser

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

import monailabel_app  # noqa: E402


def test_finds_the_stock_monaibundle_app():
    app = monailabel_app.find_sample_app()
    assert (app / "main.py").is_file()
    assert "BundleInferTask" in (app / "main.py").read_text()


def test_restore_task_name():
    assert monailabel_app.restore_task_name("vldun_mri_ct_segmentation") == "vldun_mri_ct_restoration"
    assert monailabel_app.restore_task_name("vldun") == "vldun_restoration"


def test_prepare_links_the_bundle_and_adds_the_restore_view(tmp_path):
    info = monailabel_app.prepare_app(tmp_path / "app", name="vldun_mri_ct_segmentation")
    app = Path(info["app_dir"])
    assert (app / "main.py").is_file() and (app / "lib").is_dir()
    assert (app / "monailabel_train.py").read_text() == (ROOT / "tools" / "monailabel_train.py").read_text()
    main_dir = app / "model" / "vldun_mri_ct_segmentation"
    assert main_dir.is_symlink() and main_dir.resolve() == (ROOT / "bundle").resolve()
    assert info["models"] == ["vldun_mri_ct_segmentation", "vldun_mri_ct_restoration"]

    view = app / "model" / "vldun_mri_ct_restoration"
    # shares weights and code with the main model folder (so retraining updates both), has no trainer
    assert (view / "models").resolve() == (ROOT / "bundle" / "models").resolve()
    assert (view / "scripts").resolve() == (ROOT / "bundle" / "scripts").resolve()
    assert not (view / "configs" / "train.json").exists()
    # first output = what MONAI Label serves: the restored image, under "pred", without label names
    meta = json.loads((view / "configs" / "metadata.json").read_text())
    outs = meta["network_data_format"]["outputs"]
    first_key, first = next(iter(outs.items()))
    assert first_key == "pred" and first["format"] == "magnitude" and "channel_def" not in first
    assert outs["segmentation"]["format"] == "segmentation"
    # the served config = inference.json + inference_restore.json: RestoredAsPredd runs last
    cfg = ConfigParser.load_config_file(str(view / "configs" / "inference.json"))
    targets = [t["_target_"] for t in cfg["postprocessing"]["transforms"]]
    assert targets[-1] == "scripts.serving.RestoredAsPredd"
    base = ConfigParser.load_config_file(str(ROOT / "bundle" / "configs" / "inference.json"))
    assert targets[:-1] == [t["_target_"] for t in base["postprocessing"]["transforms"]]
    assert cfg["network_def"] == base["network_def"]

    # preparing again is idempotent (refreshes the model folders, keeps the app)
    info2 = monailabel_app.prepare_app(tmp_path / "app", name="vldun_mri_ct_segmentation")
    assert info2["models"] == info["models"] and main_dir.is_symlink()


def test_prepare_without_restore_view_and_main_prints_the_offline_command(tmp_path, capsys):
    rc = monailabel_app.main(
        ["--app-dir", str(tmp_path / "app"), "--name", "my_model", "--no-restore-task", "--port", "8123"]
    )
    assert rc == 0
    out = capsys.readouterr().out
    assert sorted(os.listdir(tmp_path / "app" / "model")) == ["my_model"]
    line = [ln for ln in out.splitlines() if "start_server" in ln][0]
    for part in ("--conf models my_model", "--conf zoo_source local", "--conf sam2 false", "--port 8123"):
        assert part in line, line
    assert f"--app {tmp_path / 'app'}" in line


def test_server_command_lists_all_models():
    cmd = monailabel_app.server_command("/a", "/s", ["m1", "m2"], host="0.0.0.0", port=9000)
    assert cmd[:2] == ["monailabel", "start_server"]
    i = cmd.index("models")
    assert cmd[i - 1] == "--conf" and cmd[i + 1] == "m1,m2"
    assert cmd[cmd.index("--host") + 1] == "0.0.0.0" and cmd[cmd.index("--port") + 1] == "9000"


def test_prepare_rejects_a_folder_that_is_not_a_bundle(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a VL-DUN bundle"):
        monailabel_app.prepare_app(tmp_path / "app", bundle_dir=tmp_path)


def test_save_if_not_validated_is_in_the_monailabel_overlay_only():
    """The base train.json has no MONAI-Label-only handler; the overlay the app's trainer merges adds it."""
    handlers = ConfigParser.load_config_file(str(ROOT / "bundle" / "configs" / "train.json"))["train"]["handlers"]
    assert "scripts.serving.SaveIfNotValidated" not in [h.get("_target_") for h in handlers]
    configs = [str(ROOT / "bundle" / "configs" / f) for f in ("train.json", "monailabel.json")]
    merged = ConfigParser.load_config_files(configs)["train"]["handlers"]
    assert [h.get("_target_") for h in merged[: len(handlers)]] == [h.get("_target_") for h in handlers]
    assert merged[-1]["_target_"] == "scripts.serving.SaveIfNotValidated"
