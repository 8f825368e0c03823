"""End to end through the real CLI: fastMRI single-coil HDF5 inference (``inference_fastmri.json``) and the
message of a training / evaluation run whose datalist split is empty."""

from __future__ import annotations

import json

import pytest

from tests.test_e2e_workflows import TINY, run_cli

pytestmark = pytest.mark.slow


def test_empty_validation_split_fails_before_training_naming_file_split_and_fix(tmp_path):
    datalist = tmp_path / "datalist.json"
    case = {"image": "img.nii.gz", "label": "lab.nii.gz"}
    datalist.write_text(json.dumps({"training": [case], "validation": []}))
    common = ["--datalist", str(datalist), "--cache_rate", "0.0", "--output_dir", str(tmp_path / "eval")]
    common += ["--ckpt_dir", str(tmp_path)]
    res = run_cli(["training", "--config_file", "bundle/configs/train.json", *common] + TINY)
    assert res.returncode == 1, res.log[-3000:]
    assert f"error: datalist {datalist} has no 'validation' entries" in res.log and "--val_split" in res.log
    assert "num_samples" not in res.log and "Traceback" not in res.log

    res = run_cli(["--config_file", "['bundle/configs/train.json','bundle/configs/evaluate.json']", *common] + TINY)
    assert res.returncode == 1, res.log[-3000:]
    assert f"error: datalist {datalist} has no 'test' split" in res.log and "--eval_split" in res.log
