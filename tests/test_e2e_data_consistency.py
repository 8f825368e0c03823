"""End to end through the real CLI: training and evaluating with known-operator data consistency."""

from __future__ import annotations

import re

import pytest
import torch

from tests.test_e2e_workflows import TINY, demo_args, run_cli, train_args

pytestmark = pytest.mark.slow


def _val_psnr(log: str) -> tuple[float, float]:
    m = re.findall(r"val_psnr: ([\d.]+) val_psnr_input: ([\d.]+)", log)
    assert m, log[-3000:]
    return float(m[-1][0]), float(m[-1][1])


def test_training_and_evaluation_with_data_consistency(tmp_path):
    out = tmp_path / "run_dc"
    res = run_cli(train_args(tmp_path / "demo", out, "--epochs", "1", "--data_consistency", "true"))
    assert res.returncode == 0, res.log[-5000:]
    weights = torch.load(out / "models" / "model.pt", weights_only=True)
    assert "rec_head_imag.weight" in weights and any(".dc.embed." in k for k in weights)
    psnr, psnr_input = _val_psnr(res.log)
    # the network starts at its input and the hard projection keeps the measured samples: no worse than the input
    assert psnr >= psnr_input - 0.05

    res = _evaluate(tmp_path, out, "evaluation", "--data_consistency", "true")
    assert res.returncode == 0, res.log[-5000:]
    assert "Restored all variables from" in res.log
    psnr, psnr_input = _val_psnr(res.log)
    assert psnr >= psnr_input - 0.05

    # the blind configuration refuses the DC weights with a message instead of silently dropping parts
    res = _evaluate(tmp_path, out, "evaluation_blind", "--data_consistency", "false")
    assert res.returncode != 0 and "rec_head_imag" in res.log


def _evaluate(tmp_path, out, name: str, *extra: str):
    configs = "['bundle/configs/train.json','bundle/configs/evaluate.json']"
    args = ["--config_file", configs, "--ckpt_dir", str(out / "models"), "--output_dir", str(out / name)]
    return run_cli(args + list(extra) + demo_args(tmp_path / "demo") + TINY)
