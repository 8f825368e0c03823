"""Inference inputs (listing, screening bad files), writing the restored image, case names and the PNG report."""

from __future__ import annotations

import gzip
import json

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from PIL import Image

from scripts.workflows.io import (
    InputError,
    InputScreen,
    SaveRestoredd,
    case_meta,
    case_name,
    inference_datalist,
    list_inputs,
)
from scripts.workflows.report import VisualReportHandler, psnr, render_panel


def _nifti(path, data, affine=None):
    nib.save(nib.Nifti1Image(np.asarray(data), np.eye(4) if affine is None else affine), str(path))
    return str(path)


@pytest.fixture()
def inputs(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    rng = np.random.default_rng(0)
    good = _nifti(d / "good.nii.gz", rng.random((8, 9, 4)).astype(np.float32))
    Image.fromarray((rng.random((12, 10)) * 255).astype(np.uint8)).save(d / "slice.png")
    Image.fromarray((rng.random((12, 10, 3)) * 255).astype(np.uint8)).save(d / "rgb.png")
    _nifti(d / "fourd.nii.gz", rng.random((4, 4, 3, 2)).astype(np.float32))
    nan = rng.random((4, 4, 3)).astype(np.float32)
    nan[1, 1, 1] = np.nan
    _nifti(d / "nan.nii.gz", nan)
    raw = (d / "good.nii.gz").read_bytes()
    (d / "truncated.nii.gz").write_bytes(raw[: len(raw) // 2])
    (d / "corrupt.nii.gz").write_bytes(gzip.compress(b"this is not a nifti header" * 20))
    (d / "notes.txt").write_text("ignored")
    return d, good


def test_list_inputs_and_empty_folder(inputs, tmp_path):
    d, _ = inputs
    names = [p.rsplit("/", 1)[-1] for p in list_inputs(d)]
    assert names == sorted(names) and "notes.txt" not in names and len(names) == 7
    assert [p.rsplit("/", 1)[-1] for p in list_inputs(d, "*.png")] == ["rgb.png", "slice.png"]
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match=str(empty)):
        list_inputs(empty)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        list_inputs(tmp_path / "missing")
    # a DICOM series sub-folder is one case
    series = d / "series"
    series.mkdir()
    (series / "1.dcm").write_bytes(b"x")
    assert str(series) in list_inputs(d)


def test_inference_datalist_sources(inputs, tmp_path):
    d, good = inputs
    assert inference_datalist(files=good) == [{"image": good}]
    dl = tmp_path / "dl.json"
    dl.write_text(json.dumps({"test": [{"image": "in/good.nii.gz"}]}))
    assert inference_datalist(datalist=dl) == [{"image": str(tmp_path / "in" / "good.nii.gz")}]
    with pytest.raises(ValueError, match="no inference input"):
        inference_datalist()
    with pytest.raises(ValueError, match="validation"):
        inference_datalist(datalist=dl, datalist_key="validation")


def test_screen_rejects_bad_inputs_by_name_and_keeps_the_rest(inputs):
    d, good = inputs
    data = [{"image": p} for p in list_inputs(d)] + [{"image": str(d / "gone.nii.gz")}]
    screen = InputScreen(data)
    assert sorted(x["image"].rsplit("/", 1)[-1] for x in screen.good) == ["good.nii.gz", "slice.png"]
    msgs = "\n".join(screen.errors)
    for name, reason in [
        ("truncated.nii.gz", "cannot be read"),
        ("corrupt.nii.gz", "cannot be read"),
        ("fourd.nii.gz", "4D"),
        ("nan.nii.gz", "1 NaN"),
        ("rgb.png", "3 channel"),
        ("gone.nii.gz", "not found"),
    ]:
        line = next((m for m in screen.errors if name in m), None)
        assert line is not None and reason in line, (name, msgs)
    with pytest.raises(InputError) as err:
        screen.raise_if_failed()
    assert "6 input(s) could not be processed" in str(err.value) and "the other 2 were written" in str(err.value)
    InputScreen([{"image": good}]).raise_if_failed()  # nothing to report


def test_save_restored_keeps_affine_and_reports_the_path(tmp_path):
    affine = np.diag([1.5, 2.0, 3.0, 1.0])
    affine[:3, 3] = [5, -4, 2]
    meta = {"filename_or_obj": "/x/case1.nii.gz"}
    img = MetaTensor(torch.rand(1, 6, 7, 3), affine=torch.as_tensor(affine), meta=meta)
    d = SaveRestoredd(output_dir=tmp_path)({"restored": img, "result": {"other": 1}})
    path = d["result"]["restored"]
    assert path == str(tmp_path / "case1_restored.nii.gz") and d["result"]["other"] == 1
    out = nib.load(path)
    assert out.shape == (6, 7, 3) and np.allclose(out.affine, affine)
    assert np.allclose(out.get_fdata(), img[0].numpy(), atol=1e-6)


def test_case_names():
    assert case_name({"filename_or_obj": "/a/b/pat1.nii.gz"}) == "pat1"
    assert case_name({"filename_or_obj": "/a/img.png", "slice_index": 4}) == "img_s004"
    batch = [{"sample_id": "p_s001"}, {"image": MetaTensor(torch.zeros(1, 2, 2), meta={"filename_or_obj": "q.mha"})}]
    assert case_meta(batch) == [{"filename_or_obj": "p_s001"}, {"filename_or_obj": "q"}]


def _item(seed, fg):
    g = torch.Generator().manual_seed(seed)
    clean = torch.rand(1, 16, 16, generator=g)
    lab = torch.zeros(1, 16, 16)
    lab[0, 2 : 2 + fg, 2:8] = 1
    return {
        "image": clean + 0.1,
        "restored": clean + 0.01,
        "target": clean,
        "pred": torch.nn.functional.one_hot(lab[0].long(), 2).permute(2, 0, 1).float(),
        "label": lab,
    }


def test_report_panels(tmp_path):
    path = render_panel(_item(0, 4), tmp_path / "p.png", title="t")
    im = Image.open(path)
    assert im.size[0] > 3 * im.size[1], "five panels side by side"
    assert psnr(np.full((4, 4), 0.5), np.full((4, 4), 0.6)) == pytest.approx(20.0)

    class _Eng:  # the handler only reads state.output / state.batch
        class state:  # noqa: N801
            output = None
            batch = None

    h = VisualReportHandler(tmp_path / "rep", num_cases=1)
    eng = _Eng()
    for sid, fg in [("a_s000", 1), ("a_s001", 6), ("b_s000", 3)]:
        eng.state.output = [{**_item(1, fg), "sample_id": sid}]
        eng.state.batch = [{"sample_id": sid}]
        h._collect(eng)
    h._write(eng)
    assert [p.name for p in h.written] == ["a_s001.png"], "one case, its slice with the most foreground"
    assert "a_s001.png" in (tmp_path / "rep" / "index.html").read_text()


def _case(tmp_path, image, label, name="case"):
    return {
        "image": _nifti(tmp_path / f"{name}.nii.gz", image),
        "label": _nifti(tmp_path / f"{name}_seg.nii.gz", label),
    }


def _load_and_check(item, num_classes=4):
    from monai.transforms import Compose, LoadImaged

    from scripts.workflows.io import CheckCased

    load = LoadImaged(["image", "label"], image_only=True, ensure_channel_first=True)
    return Compose([load, CheckCased(["image", "label"], label_key="label", num_classes=num_classes)])(item)


def test_case_check_names_the_file_the_bad_label_values_and_num_classes(tmp_path):
    rng = np.random.default_rng(0)
    image = rng.random((8, 9, 4)).astype(np.float32)
    label = np.zeros((8, 9, 4), np.uint8)
    label[2:4, 2:4, 1] = 3
    out = _load_and_check(_case(tmp_path, image, label, "good"))
    assert out["image"].shape == (1, 8, 9, 4) and out["label"].shape == (1, 8, 9, 4)
    label[5, 5, 2] = 7
    label[6, 6, 2] = 9
    with pytest.raises(Exception) as err:  # Compose wraps the transform's error; the message is kept
        _load_and_check(_case(tmp_path, image, label, "bad"))
    msg = str(err.value) + str(err.value.__cause__)
    assert "bad_seg.nii.gz" in msg and "[7, 9]" in msg and "num_classes 4" in msg, msg
    assert _load_and_check(_case(tmp_path, image, label, "more"), num_classes=10)["label"].max() == 9
    half = label.astype(np.float32)
    half[0, 0, 0] = 0.5
    with pytest.raises(Exception) as err:
        _load_and_check(_case(tmp_path, image, half, "frac"))
    msg = str(err.value) + str(err.value.__cause__)
    assert "frac_seg.nii.gz" in msg and "non-integer" in msg and "0.5" in msg, msg


def test_case_check_names_a_4d_volume_with_its_shape(tmp_path):
    rng = np.random.default_rng(0)
    fourd = rng.random((8, 9, 4, 2)).astype(np.float32)
    with pytest.raises(Exception) as err:
        _load_and_check(_case(tmp_path, fourd, np.zeros((8, 9, 4), np.uint8), "fourd"))
    msg = str(err.value) + str(err.value.__cause__)
    assert "fourd.nii.gz" in msg and "4D" in msg and "(8, 9, 4)" in msg and "2 channel" in msg, msg
    nan = rng.random((8, 9, 4)).astype(np.float32)
    nan[1, 1, 1] = np.nan
    with pytest.raises(Exception) as err:
        _load_and_check(_case(tmp_path, nan, np.zeros((8, 9, 4), np.uint8), "nan"))
    assert "nan.nii.gz" in str(err.value) + str(err.value.__cause__)


def test_load_datalist_names_the_file_the_split_and_the_fix(tmp_path):
    from scripts.workflows.io import DatalistError, load_datalist

    path = tmp_path / "datalist.json"
    path.write_text(json.dumps({"training": [{"image": "a.nii.gz", "label": "b.nii.gz"}], "validation": []}))
    items = load_datalist(path, "training", tmp_path, option="train_split")
    assert items == [{"image": str(tmp_path / "a.nii.gz"), "label": str(tmp_path / "b.nii.gz")}]
    message = r"has no 'validation' entries.*non-empty lists: \['training'\].*--val_split"
    with pytest.raises(DatalistError, match=message):
        load_datalist(path, "validation", tmp_path, option="val_split")
    with pytest.raises(DatalistError, match=r"has no 'test' split \(lists: \['training', 'validation'\]\)"):
        load_datalist(path, "test", tmp_path)
    assert str(path) in str(pytest.raises(DatalistError, load_datalist, path, "test").value)
    with pytest.raises(DatalistError, match="not found"):
        load_datalist(tmp_path / "missing.json", "training")
