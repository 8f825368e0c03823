"""Messages that guide: weights of another preset, a missing weights file, the bad-input table of a CLI run."""

from __future__ import annotations

import shlex

import nibabel as nib
import numpy as np
import pytest
import torch

from scripts.networks import VLDUN
from scripts.workflows.io import InputScreen
from scripts.workflows.weights import WeightsLoader, describe_weights, guess_preset

BUNDLE_RUN = ["/venv/lib/python3.11/site-packages/monai/bundle/__main__.py", "run", "--config_file", "x.json"]


class _Engine:
    class state:  # noqa: N801 - what CheckpointLoader reads of an ignite engine
        max_epochs = None
        epoch = 0


@pytest.fixture(scope="module")
def tiny_state():
    torch.manual_seed(0)
    return VLDUN.from_preset("tiny", num_classes=4, clip_pretrained=None).state_dict()


def test_weights_of_another_preset_name_both_presets_in_one_sentence(tmp_path, tiny_state):
    path = tmp_path / "model.pt"
    torch.save(tiny_state, path)
    assert guess_preset(tiny_state) == "tiny" and describe_weights(tiny_state) == "preset 'tiny' (dim 8), 4 classes"
    small = VLDUN.from_preset("small", num_classes=3, clip_pretrained=None)
    with pytest.raises(RuntimeError) as err:
        WeightsLoader(str(path), {"model": small}, preset="small")(_Engine())
    msg = str(err.value)
    assert "preset 'tiny' (dim 8), 4 classes" in msg and "preset 'small' (dim 16), 3 classes" in msg, msg
    assert "--preset tiny --num_classes 4" in msg and str(path) in msg
    assert len(msg.splitlines()) == 1 and err.value.__cause__ is None and err.value.__suppress_context__


@pytest.mark.parametrize(
    "trained, built, hint",
    [
        ({}, {"data_consistency": True}, "--data_consistency false"),
        ({"data_consistency": True, "dc_cascades": 2}, {"data_consistency": True}, "--dc_cascades 2"),
        ({"data_consistency": True}, {"data_consistency": True, "dc_cascades": 1}, "--dc_cascades 0"),
        ({"data_consistency": True, "dc_to_seg": True}, {"data_consistency": True}, "--dc_to_seg true"),
    ],
)
def test_weights_with_other_known_operator_parts_name_the_switch(tmp_path, trained, built, hint):
    path = tmp_path / "model.pt"
    torch.manual_seed(0)
    torch.save(VLDUN.from_preset("tiny", num_classes=4, **trained).state_dict(), path)
    net = VLDUN.from_preset("tiny", num_classes=4, **built)
    with pytest.raises(RuntimeError, match=f"Run with {hint} to build"):
        WeightsLoader(str(path), {"model": net}, preset="tiny")(_Engine())


_UNET_HEAD = {
    "seg_decoder": "unet",
    "seg_norm": ("instance", {"affine": True}),
    "seg_unet_features": [4, 4, 8, 8, 16, 4],
}
_DC = {"data_consistency": True, "dc_cascades": 1, "dc_cascade_features": [4, 4, 8, 8, 16, 4]}


@pytest.mark.parametrize(
    "trained, built, hints",
    [
        (_UNET_HEAD, {}, ["--seg_decoder unet", "--seg_unet_features", "--seg_norm \"['instance'"]),
        ({}, _UNET_HEAD, ["--seg_decoder conv", "--seg_norm batch"]),
        ({**_UNET_HEAD, "seg_norm": "batch"}, _UNET_HEAD, ["--seg_norm batch"]),
        ({**_UNET_HEAD, "seg_decoder": "image_unet"}, _UNET_HEAD, ["--seg_decoder image_unet"]),
        (_UNET_HEAD, {**_UNET_HEAD, "seg_decoder": "image_unet"}, ["--seg_decoder unet"]),
        (_UNET_HEAD, {**_UNET_HEAD, "seg_unet_features": [4, 4, 8, 8, 8, 4]}, ['"[4,4,8,8,16,4]"']),
        (_DC, {**_DC, "dc_cascade_features": [4, 4, 8, 16, 16, 4]}, ['--dc_cascade_features "[4,4,8,8,16,4]"']),
    ],
)
def test_weights_with_another_seg_head_or_cascade_width_name_the_switches_that_load_them(
    tmp_path, trained, built, hints
):
    """The hint is a command line: parsed as ``python -m monai.bundle run`` parses it, its values build a network
    that the weights load into."""
    from scripts.cli import parse_cli_args

    path = tmp_path / "model.pt"
    torch.manual_seed(0)
    torch.save(VLDUN.from_preset("tiny", num_classes=3, **trained).state_dict(), path)
    with pytest.raises(RuntimeError) as err:
        WeightsLoader(str(path), {"model": VLDUN.from_preset("tiny", num_classes=3, **built)})(_Engine())
    msg = str(err.value)
    assert all(h in msg for h in hints), msg
    switches = parse_cli_args(shlex.split(msg.split("Run with ")[1].split(" to build")[0]))
    rebuilt = VLDUN.from_preset("tiny", num_classes=3, **{**built, **switches})
    WeightsLoader(str(path), {"model": rebuilt})(_Engine())


def test_a_missing_weights_file_says_how_to_get_one(tmp_path, tiny_state, monkeypatch, capsys):
    net = VLDUN.from_preset("tiny", num_classes=4, clip_pretrained=None)
    with pytest.raises(FileNotFoundError, match="Train first .*train.json.*--load_pretrain false"):
        WeightsLoader(str(tmp_path / "model.pt"), {"model": net})(_Engine())
    monkeypatch.setattr("sys.argv", BUNDLE_RUN)
    with pytest.raises(SystemExit) as ex:
        WeightsLoader(str(tmp_path / "model.pt"), {"model": net})(_Engine())
    assert ex.value.code == 1 and "error: no weights file" in capsys.readouterr().err
    torch.save(tiny_state, tmp_path / "ok.pt")
    WeightsLoader(str(tmp_path / "ok.pt"), {"model": net})(_Engine())  # matching weights load as before


def test_rejected_inputs_end_a_cli_run_with_a_table_and_exit_status_1(tmp_path, monkeypatch, capsys):
    good, four_d = tmp_path / "good.nii.gz", tmp_path / "fourd.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((8, 8, 3), np.float32), np.eye(4)), str(good))
    nib.save(nib.Nifti1Image(np.ones((8, 8, 3, 2), np.float32), np.eye(4)), str(four_d))
    screen = InputScreen([{"image": str(good)}, {"image": str(four_d)}, {"image": str(tmp_path / "gone.nii.gz")}])
    monkeypatch.setattr("sys.argv", BUNDLE_RUN)
    with pytest.raises(SystemExit) as ex:
        screen.raise_if_failed()
    err = capsys.readouterr().err
    assert ex.value.code == 1 and "Traceback" not in err
    lines = err.splitlines()
    assert lines[0] == "error: 2 input(s) could not be processed (the other 1 were written):"
    assert lines[1].split() == ["file", "problem"]
    assert lines[2].startswith(f"  {four_d}  ") and "4D data" in lines[2]
    assert lines[3].startswith(f"  {tmp_path / 'gone.nii.gz'}") and lines[3].endswith("file not found")
