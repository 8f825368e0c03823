"""End to end through the real CLI: fastMRI single-coil HDF5 inference (``inference_fastmri.json``) and the
message of a training / evaluation run whose datalist split is empty."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import h5py
import nibabel as nib
import numpy as np
import pytest

from tests.fastmri_files import write_fastmri
from tests.test_e2e_workflows import ROOT, TINY, run_cli

FASTMRI = "['bundle/configs/inference.json','bundle/configs/inference_fastmri.json']"

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


def _dc_weights(path) -> None:
    """A randomly initialised tiny VL-DUN with data consistency, built from the fastMRI config itself."""
    code = (
        "import sys, torch; torch.manual_seed(0); from monai.bundle import ConfigParser; p = ConfigParser();"
        f"p.read_config({FASTMRI}); p['preset'] = 'tiny'; p['data_consistency'] = True;"
        "torch.save(p.get_parsed_content('network_def', instantiate=True).state_dict(), sys.argv[1])"
    )
    subprocess.run([sys.executable, "-c", code, str(path)], cwd=ROOT, check=True, capture_output=True)


def test_fastmri_hdf5_inference_with_data_consistency_writes_cropped_nifti_and_volume_metrics(tmp_path):
    inp, out = tmp_path / "in", tmp_path / "out"
    inp.mkdir()
    write_fastmri(inp / "full.h5", slices=3)  # fully sampled, with reconstruction_esc and a 24 x 24 recon matrix
    mask = np.zeros(40, bool)
    mask[::4] = True
    mask[17:23] = True
    write_fastmri(inp / "under.h5", slices=2, mask=mask, target=False, seed=1)  # test-set style: mask, no target
    _dc_weights(tmp_path / "model.pt")
    args = ["--config_file", FASTMRI, "--input_dir", str(inp), "--output_dir", str(out)]
    args += ["--ckpt_path", str(tmp_path / "model.pt"), "--preset", "tiny", "--num_threads", "1"]
    res = run_cli(["run", *args, "--data_consistency", "true"])
    assert res.returncode == 0, res.log[-5000:]
    for name, slices in (("full", 3), ("under", 2)):
        for kind in ("restored", "seg"):
            img = nib.load(out / f"{name}_{kind}.nii.gz")
            assert img.shape == (24, 24, slices), (name, kind, img.shape)
            np.testing.assert_allclose(np.diag(img.affine)[:3], [0.5, 0.5, 3.0])
        info = json.loads((out / f"{name}_fastmri.json").read_text())
        assert info["scale"] > 0 and info["recon_size"] == [24, 24]
    assert json.loads((out / "under_fastmri.json").read_text())["mask"] == "file"
    rows = list(csv.DictReader((out / "metrics_volume.csv").open()))
    assert [r["case"] for r in rows] == ["full.h5", "mean"]
    # fully sampled + hard data consistency: the output is the measured image (in the file's units)
    assert float(rows[0]["val_psnr_volume"]) > 60 and float(rows[0]["val_ssim_volume"]) > 0.99
    assert "val_psnr_volume" in res.log and "val_ssim" in res.log

    # a file that is not single-coil fastMRI data stops the run naming it (the good files are still written)
    bad = inp / "nokspace.h5"
    with h5py.File(bad, "w") as f:
        f["image"] = np.zeros((2, 4, 4), np.float32)
    res = run_cli(["run", *args[:-2], "--output_dir", str(tmp_path / "out2"), "--data_consistency", "true"])
    assert res.returncode == 1 and f"{bad}: no 'kspace' dataset" in res.log, res.log[-3000:]
    assert (tmp_path / "out2" / "full_restored.nii.gz").is_file()
