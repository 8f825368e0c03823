"""Command-line overrides checked before any work: unknown keys (with a suggestion) and values of the wrong type
stop ``python -m monai.bundle run`` at ``initialize``, naming the key; other programs are not checked."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import monai
import pytest

from scripts.cli import check_cli_overrides, find_override_problems, is_bundle_run, parse_cli_args

ROOT = Path(__file__).resolve().parents[1]
TRAIN = "bundle/configs/train.json"
#: the config's own default, which the messages quote (the demo recipe changes it)
EPOCHS = json.loads((ROOT / TRAIN).read_text())["epochs"]
MONAI_MAIN = str(Path(monai.__file__).parent / "bundle" / "__main__.py")  # sys.argv[0] of `python -m monai.bundle`

CONFIG = {
    "epochs": 6,
    "learning_rate": 0.001,
    "resume": False,
    "preset": "small",
    "num_threads": None,
    "patch_size": [64, 64],
    "mask_types": {"MRI": "cartesian", "CT": "radial"},
    "amp": "$torch.cuda.is_available()",
    "max_epochs": "@epochs",
    "network_def": {"_target_": "torch.nn.Linear", "in_features": 3},
    "datalist": {"_target_": "scripts.data.demo.ensure_demo_data", "root": None},
    "handlers": [{"_target_": "StatsHandler", "iteration_log": False}],
    "loader": {"_target_": "DataLoader", "dataset": "@dataset", "batch_size": 1},  # **kwargs go to torch's
    "vldun": {"_target_": "scripts.networks.VLDUN.from_preset", "name": "tiny"},  # **overrides go to VLDUN
    "opaque": {"_target_": "dict"},  # no signature to read
}


def problems(**overrides) -> list[str]:
    return find_override_problems(overrides, CONFIG, allowed={"config_file", "tracking"})


def one(key: str, value) -> str:
    found = find_override_problems({key: value}, CONFIG)
    assert len(found) == 1, found
    return found[0]


@pytest.mark.parametrize(
    "key, value",
    [
        ("epochs", 2),
        ("learning_rate", 1),
        ("learning_rate", 0.5),
        ("resume", "false"),
        ("resume", True),
        ("preset", 5),  # strings take anything
        ("num_threads", "anything"),  # null takes anything
        ("patch_size", [32, 32]),
        ("mask_types", {"MRI": "radial"}),
        ("mask_types#MRI", "radial"),
        ("amp", "false"),  # expressions and references are not type-checked
        ("max_epochs", 2.5),
        ("epochs", "$@max_epochs * 2"),  # nor are expressions given on the command line
        ("network_def#in_features", 4),
        ("network_def::in_features", 4),
        ("network_def#out_features", 2),  # an argument of the target that the config leaves at its default
        ("datalist", "/data/datalist.json"),  # a component may be replaced by anything
        ("datalist#num_cases", 6),
        ("handlers#0#iteration_log", "true"),
        ("handlers#0#_disabled_", "true"),  # MONAI's reserved keys
        ("loader#shuffle", True),
        ("vldun#dim", 24),
        ("opaque#anything", 1),
        ("config_file", "x.json"),  # MONAI's own run arguments
        ("_meta_#version", "0.2"),
    ],
)
def test_valid_overrides_pass(key, value):
    assert problems(**{key: value}) == []


def test_unknown_keys_are_named_with_a_close_match():
    assert one("epoch", 1) == "--epoch: no such key in the config; did you mean --epochs or --max_epochs?"
    assert one("learningrate", 0.1).endswith("did you mean --learning_rate?")
    assert one("zzz", 1) == "--zzz: no such key in the config"
    assert one("network_def#out_feature", 2).startswith(
        "--network_def#out_feature: no such key under network_def; did you mean --network_def#out_features"
    )
    assert one("netwrk_def#dim", 2).endswith("did you mean --network_def#dim?")
    assert "did you mean --loader#batch_size" in one("loader#batch_sise", 2)
    assert "did you mean --vldun#dim" in one("vldun#dimm", 24)
    assert one("mask_types#PET", "radial").startswith("--mask_types#PET: no such key under mask_types")
    assert "not an index" in one("handlers#3#iteration_log", False)
    assert "is a single value" in one("epochs#x", 1)
    # the run arguments are suggested too
    assert find_override_problems({"config_files": "a"}, CONFIG, allowed={"config_file"})[0].endswith(
        "did you mean --config_file?"
    )


@pytest.mark.parametrize(
    "key, value, expected",
    [
        ("epochs", "abc", "expected an int (the config value is 6), got 'abc' (str)"),
        ("epochs", 2.5, "expected an int"),
        ("epochs", True, "expected an int"),
        ("learning_rate", "fast", "expected a float"),
        ("resume", "flase", "expected a boolean (true/false)"),
        ("patch_size", 32, "expected a list"),
        ("mask_types", "radial", "expected a dict"),
        ("network_def#in_features", "a", "expected an int (the config value is 3)"),
        ("handlers#0#iteration_log", "maybe", "expected a boolean"),
    ],
)
def test_wrong_types_are_named_with_the_expected_type(key, value, expected):
    msg = one(key, value)
    assert msg.startswith(f"--{key}: ") and expected in msg, msg


def test_command_line_parsing_follows_python_fire():
    args = ["training", "--config_file", "a.json", "--epochs=3", "--patch_size", "[32,32]", "--resume", "false"]
    args += ["--ct_window#0", "-500", "--flag", "--nogood", "--run-name", "x", "--", "--help"]
    assert parse_cli_args(args) == {
        "config_file": "a.json",
        "epochs": 3,
        "patch_size": [32, 32],
        "resume": "false",
        "ct_window#0": -500,
        "flag": True,
        "good": False,
        "run_name": "x",
    }


def test_only_a_monai_bundle_run_command_line_is_checked(capsys):
    assert is_bundle_run([MONAI_MAIN, "run", "training"])
    assert not is_bundle_run([MONAI_MAIN, "verify_net_in_out", "network_def"])
    assert not is_bundle_run(["/x/monailabel/main.py", "start_server", "--epoch", "1"])
    # MONAI Label and tests run the configs in-process under their own argv: nothing to check
    check_cli_overrides(["/x/monailabel/main.py", "start_server", "--conf", "models", "x", "--epoch", "1"])
    check_cli_overrides()  # pytest's own command line
    ok = ["--epochs", "2", "--resume", "true", "--network_def#dim", "24"]
    check_cli_overrides([MONAI_MAIN, "run", "training", "--config_file", str(ROOT / TRAIN), *ok])
    with pytest.raises(SystemExit) as stop:
        check_cli_overrides([MONAI_MAIN, "run", "training", "--config_file", str(ROOT / TRAIN), "--epoch", "1"])
    assert stop.value.code == 2
    assert "--epoch: no such key in" in capsys.readouterr().err


def test_tracking_settings_and_args_file_are_understood(tmp_path, capsys):
    base = [MONAI_MAIN, "run", "training", "--config_file", str(ROOT / TRAIN)]
    check_cli_overrides([*base, "--tracking", "mlflow", "--run_name", "a", "--tracking_uri", "sqlite:///x.db"])
    check_cli_overrides([*base, "--run_name", "a"])  # names the run folder, with or without --tracking
    with pytest.raises(SystemExit):
        check_cli_overrides([*base, "--tracking_uri", "sqlite:///x.db"])  # without --tracking nothing reads it
    args_file = tmp_path / "args.json"
    args_file.write_text('{"config_file": "%s", "epochz": 2}' % (ROOT / TRAIN))
    with pytest.raises(SystemExit):
        check_cli_overrides([MONAI_MAIN, "run", "training", "--args_file", str(args_file)])
    err = capsys.readouterr().err
    assert "--epochz: no such key" in err and "did you mean --epochs?" in err and "(set in --args_file)" in err


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "monai.bundle", "run", *args]
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    res.log = res.stdout + res.stderr  # type: ignore[attr-defined]
    return res


def outputs(tmp: Path) -> list[str]:
    # small enough that, without the check, the run finishes in seconds instead of training the default model
    return [
        "--demo_dir", str(tmp / "demo"), "--datalist#num_cases", "4", "--datalist#shape", "[32,32,6]",
        "--output_dir", str(tmp / "eval"), "--ckpt_dir", str(tmp / "models"),
        "--preset", "tiny", "--patch_size", "[32,32]", "--batch_size", "2", "--train_slices_per_volume", "1",
        "--val_slices_per_volume", "1", "--progress_bar", "false", "--num_threads", "1",
    ]  # fmt: skip


def assert_nothing_ran(tmp: Path) -> None:
    for d in ("demo", "eval", "models"):
        assert not (tmp / d).exists(), f"{d} was written: the run started before failing"


@pytest.mark.slow
def test_cli_typo_fails_before_any_work_with_a_suggestion(tmp_path):
    res = run_cli("training", "--config_file", TRAIN, *outputs(tmp_path), "--epoch", "1")
    assert res.returncode != 0, res.log[-3000:]
    assert "--epoch: no such key in bundle/configs/train.json; did you mean --epochs" in res.log, res.log[-3000:]
    assert_nothing_ran(tmp_path)


@pytest.mark.slow
def test_cli_wrong_types_fail_before_any_work_naming_key_and_type(tmp_path):
    res = run_cli("training", "--config_file", TRAIN, *outputs(tmp_path), "--epochs", "abc", "--learning_rate", "x")
    assert res.returncode != 0, res.log[-3000:]
    assert f"--epochs: expected an int (the config value is {EPOCHS}), got 'abc'" in res.log, res.log[-3000:]
    assert "--learning_rate: expected a float" in res.log
    assert "abcabc" not in res.log
    assert_nothing_ran(tmp_path)
    res = run_cli("training", "--config_file", TRAIN, *outputs(tmp_path), "--batch_size", "2.5")
    assert res.returncode != 0 and "--batch_size: expected an int (the config value is 8), got 2.5" in res.log
    assert_nothing_ran(tmp_path)


@pytest.mark.slow
def test_cli_checks_merged_configs_nested_keys_and_every_workflow(tmp_path):
    merged = "['bundle/configs/train.json','bundle/configs/evaluate.json']"
    res = run_cli(
        "evaluating", "--config_file", merged, *outputs(tmp_path), "--eval_slice_per_volume", "3",
        "--validate#dataloader#batch_sise", "2",
    )  # fmt: skip
    assert res.returncode != 0, res.log[-3000:]
    assert "--eval_slice_per_volume: no such key" in res.log, res.log[-3000:]
    assert "did you mean --eval_slices_per_volume" in res.log
    assert "--validate#dataloader#batch_sise: no such key under validate#dataloader; " in res.log
    assert "did you mean --validate#dataloader#batch_size" in res.log
    assert_nothing_ran(tmp_path)
    res = run_cli(
        "--config_file", "bundle/configs/inference.json", "--input_dirr", str(tmp_path), "--output_dir",
        str(tmp_path / "eval"), "--preset", "tiny",
    )  # fmt: skip
    assert res.returncode != 0 and "--input_dirr: no such key" in res.log and "did you mean --input_dir" in res.log
    assert_nothing_ran(tmp_path)


@pytest.mark.parametrize(
    "configs, args",
    [
        (["train.json"], ["--datalist", "/d.json", "--preset", "paper", "--epochs", "200", "--num_classes", "4"]),
        (["train.json"], ["--network_def#scan_backend", "chunked", "--network_def#freq_decouple", "false"]),
        (["train.json"], ["--num_spokes", "[60, 90, 120]", "--resume", "true", "--max_minutes", "29"]),
        (["train.json"], ["--tracking", "mlflow", "--tracking_uri", "sqlite:///x.db", "--experiment_name", "v"]),
        (["train.json"], ["--meta_file", "bundle/configs/metadata.json", "--logging_file", "x.conf"]),
        (["train.json", "acdc_slices.json"], ["--roi_size", "[48,48]", "--batch_size", "4", "--num_threads", "1"]),
        (["train.json", "evaluate.json"], ["--eval_split", "validation", "--eval_ckpt", "m.pt", "--report_cases", "2"]),
        (["train.json", "multi_gpu_train.json"], ["--dist_backend", "gloo", "--ddp_find_unused_parameters", "false"]),
        (["train.json", "clip_finetune.json"], ["--primitive_fraction", "0.3", "--clip_prior_weights", "p.pt"]),
        (["inference.json"], ["--input_files", "['/a.nii.gz','/b.mha']", "--modality", "CT", "--slice_axis", "0"]),
        (["inference.json"], ["--simulate_undersampling", "true", "--restored_intensity", "normalized"]),
    ],
)
def test_documented_command_lines_pass(configs, args, monkeypatch):
    files = [f"bundle/configs/{c}" for c in configs]
    config_file = files[0] if len(files) == 1 else str(files)
    monkeypatch.chdir(ROOT)  # the config paths are relative, as on the documented command lines
    check_cli_overrides([MONAI_MAIN, "run", "training", "--config_file", config_file, *args])
