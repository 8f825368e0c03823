"""Real-data preparation: each layout (tiny synthetic fixtures) -> a datalist MONAI reads; bad input -> clear errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from scripts.data.layouts import LAYOUTS, LayoutOptions, find_acdc_cases, find_brats_cases, find_msd_cases
from scripts.data.prepare import (
    BRATS_LABEL_MAP,
    DataPreparationError,
    main,
    normalize_modality,
    parse_labels,
    prepare_datalist,
    split_patients,
)

BUNDLE = Path(__file__).resolve().parents[1] / "bundle"
SPLITS = ("training", "validation", "test")


def _nii(path: Path, arr, spacing=(1.5, 1.5, 5.0)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    aff = np.diag([*spacing, 1.0])
    nib.save(nib.Nifti1Image(np.asarray(arr), aff), str(path))
    return path


def _label(shape, values, seed) -> np.ndarray:
    rng = np.random.default_rng(seed)
    lab = np.zeros(shape, np.uint8)
    for v in values:
        if v:
            lab[tuple(rng.integers(0, s) for s in shape)] = v
    return lab


def _png(path: Path, arr) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(arr)).save(path)
    return path


def _load_all(datalist_path: Path) -> dict[str, list[dict]]:
    from monai.data import load_decathlon_datalist

    dl = json.loads(datalist_path.read_text())
    out = {}
    for key in SPLITS:
        if key not in dl:
            continue
        items = load_decathlon_datalist(datalist_path, data_list_key=key)
        for it in items:
            assert Path(it["image"]).is_file() and Path(it["label"]).is_file(), it
            assert {"image", "label", "modality", "case_id", "metadata"} <= set(it)
            assert {"patient_id", "source", "shape"} <= set(it["metadata"])
        out[key] = items
    patients = [{it["metadata"]["patient_id"] for it in out.get(k, [])} for k in SPLITS]
    assert not (patients[0] & patients[1] or patients[0] & patients[2] or patients[1] & patients[2]), "not patient-wise"
    assert sum(len(v) for v in out.values()) == dl["numTraining"] + dl["numValidation"] + dl["numTest"]
    return out


# ----------------------------------------------------------------------------------------------- fixtures
@pytest.fixture
def msd(tmp_path) -> Path:
    root = tmp_path / "Task02_Heart"
    for i in range(1, 7):
        _nii(root / "imagesTr" / f"la_{i:03d}.nii.gz", np.full((8, 8, 3), i, np.float32))
        _nii(root / "labelsTr" / f"la_{i:03d}.nii.gz", _label((8, 8, 3), (1,), i))
    (root / "imagesTr" / "._la_001.nii.gz").write_bytes(b"\0\5\26\7 macOS resource fork")  # MSD tarball junk
    _nii(root / "imagesTs" / "la_100.nii.gz", np.zeros((8, 8, 3), np.float32))
    ds = {
        "name": "LeftAtrium", "description": "Left atrium segmentation", "modality": {"0": "MRI"},
        "labels": {"0": "background", "1": "left atrium"}, "numTraining": 6,
        "training": [{"image": f"./imagesTr/la_{i:03d}.nii.gz", "label": f"./labelsTr/la_{i:03d}.nii.gz"}
                     for i in range(1, 7)],
    }  # fmt: skip
    (root / "dataset.json").write_text(json.dumps(ds))
    return root


@pytest.fixture
def nnunet(tmp_path) -> Path:
    root = tmp_path / "Dataset042_Toy"
    for i in range(5):
        for ch in (0, 1):
            _nii(root / "imagesTr" / f"toy_{i:03d}_{ch:04d}.nii.gz", np.full((6, 7, 4), 10 * ch + i, np.int16))
        _nii(root / "labelsTr" / f"toy_{i:03d}.nii.gz", _label((6, 7, 4), (1, 2), i))
    ds = {"channel_names": {"0": "CT", "1": "T2"}, "labels": {"background": 0, "liver": 1, "tumour": 2},
          "numTraining": 5, "file_ending": ".nii.gz"}  # fmt: skip
    (root / "dataset.json").write_text(json.dumps(ds))
    return root


@pytest.fixture
def acdc(tmp_path) -> Path:
    root = tmp_path / "ACDC" / "database"
    groups = ["DCM", "HCM", "MINF", "NOR", "RV"]
    for p in range(1, 6):
        pdir = root / ("training" if p < 5 else "testing") / f"patient{p:03d}"
        ed, es = 1, 7 + p
        for fr in (ed, es):
            _nii(pdir / f"patient{p:03d}_frame{fr:02d}.nii.gz", np.full((10, 9, 3), fr, np.int16))
            _nii(pdir / f"patient{p:03d}_frame{fr:02d}_gt.nii.gz", _label((10, 9, 3), (1, 2, 3), p * fr))
        _nii(pdir / f"patient{p:03d}_4d.nii.gz", np.zeros((10, 9, 3, 2), np.int16))
        if p != 3:  # Info.cfg is optional
            (pdir / "Info.cfg").write_text(
                f"ED: {ed}\nES: {es}\nGroup: {groups[p - 1]}\nHeight: 170.0\nNbFrame: 30\nWeight: 70.5\n"
            )
    return root


@pytest.fixture
def brats(tmp_path) -> Path:
    root = tmp_path / "BraTS2021_Training_Data"
    for i in range(4):
        subj = f"BraTS2021_{i:05d}"
        for seq in ("t1", "t1ce", "t2", "flair"):
            _nii(root / subj / f"{subj}_{seq}.nii.gz", np.full((8, 8, 5), i, np.int16), (1.0, 1.0, 1.0))
        seg = _label((8, 8, 5), (1, 2, 4), i)
        _nii(root / subj / f"{subj}_seg.nii.gz", seg, (1.0, 1.0, 1.0))
    return root


@pytest.fixture
def slices(tmp_path) -> Path:
    root = tmp_path / "acdc_slices"
    rows = ["stem,patient,frame,slice,scale_to_h5"]
    for p in (1, 7, 13, 24, 30, 59, 66, 80, 93):  # includes the protocol's ACDC test ids
        for fr in (1, 2):
            for s in range(2):
                stem = f"patient{p:03d}_frame{fr:02d}_slice{s:02d}"
                h, w = 12 + p % 3, 10
                _png(root / "images" / f"{stem}.png", np.full((h, w), 100 * p + s, np.uint16))
                _png(root / "labels" / f"{stem}.png", _label((h, w), (1, 2, 3), p + s))
                rows.append(f"{stem},patient{p:03d},frame{fr:02d},{s},{600 + p}")
    (root / "manifest.csv").write_text("\n".join(rows) + "\n")
    return root


# ----------------------------------------------------------------------------------------------- layouts
def test_msd(msd, tmp_path):
    out = tmp_path / "out" / "msd.json"
    dl = prepare_datalist("msd", msd, out, val_fraction=0.2, test_fraction=0.2)
    items = _load_all(out)
    assert dl["labels"] == {"0": "background", "1": "left atrium"} and dl["modality"] == {"0": "MRI"}
    assert dl["name"] == "LeftAtrium" and dl["label_map"] == {"0": 0, "1": 1}
    assert sum(len(v) for v in items.values()) == 6  # hidden ._ file and imagesTs ignored
    it = items["training"][0]
    assert it["modality"] == "MRI" and it["metadata"]["shape"] == [8, 8, 3]
    assert it["metadata"]["spacing"] == [1.5, 1.5, 5.0]
    raw = json.loads(out.read_text())["training"][0]["image"]
    assert raw.startswith("../Task02_Heart/imagesTr/"), "paths are relative to the datalist folder"


def test_nnunet_channels(nnunet, tmp_path):
    out = tmp_path / "nn.json"
    dl = prepare_datalist("nnunet", nnunet, out)
    assert dl["labels"] == {"0": "background", "1": "liver", "2": "tumour"} and dl["modality"] == {"0": "CT"}
    items = [it for v in _load_all(out).values() for it in v]
    assert {it["case_id"] for it in items} == {f"toy_{i:03d}" for i in range(5)}
    assert all(it["image"].endswith("_0000.nii.gz") for it in items)
    dl1 = prepare_datalist("nnunet", nnunet, tmp_path / "nn1.json", channel=1)
    first = dl1["training"][0]
    assert first["image"].endswith("_0001.nii.gz") and first["modality"] == "MRI"  # channel name "T2"
    assert first["metadata"]["channel_name"] == "T2" and first["metadata"]["num_channels"] == 2


def test_msd_case_names_with_four_digits_are_not_channels(tmp_path):
    root = tmp_path / "kits"
    for i in range(3):
        _nii(root / "imagesTr" / f"case_{i:04d}.nii.gz", np.zeros((4, 4, 2), np.int16))
        _nii(root / "labelsTr" / f"case_{i:04d}.nii.gz", np.zeros((4, 4, 2), np.uint8))
    ds = {"labels": {"0": "background", "1": "kidney"}, "modality": {"0": "CT"}}
    (root / "dataset.json").write_text(json.dumps(ds))
    dl = prepare_datalist("msd", root, None, test_fraction=0, val_fraction=0)
    assert sorted(it["case_id"] for it in dl["training"]) == ["case_0000", "case_0001", "case_0002"]


def test_acdc(acdc, tmp_path):
    out = tmp_path / "acdc.json"
    dl = prepare_datalist("acdc", acdc, out, test_ids="2, 005", val_fraction=0.2)
    items = _load_all(out)
    assert dl["labels"]["1"] == "right_ventricle" and dl["labels"]["3"] == "left_ventricle"
    assert dl["split"]["patients"]["test"] == ["patient002", "patient005"]
    assert len(dl["split"]["patients"]["validation"]) == 1
    assert sum(len(v) for v in items.values()) == 10  # 5 patients x 2 frames, no 4d, no gt as images
    by_id = {it["case_id"]: it for v in items.values() for it in v}
    meta = by_id["patient002_frame09"]["metadata"]
    assert meta["phase"] == "ES" and meta["group"] == "HCM" and meta["frame"] == 9 and meta["weight"] == "70.5"
    assert by_id["patient002_frame01"]["metadata"]["phase"] == "ED"
    assert (
        by_id["patient003_frame01"]["metadata"]["group"] == ""
        and by_id["patient003_frame01"]["metadata"]["weight"] == ""
    )
    assert by_id["patient005_frame01"]["metadata"]["subset"] == "testing"
    assert all(it["modality"] == "MRI" for it in by_id.values())


def test_brats_remap(brats, tmp_path):
    out = tmp_path / "brats.json"
    dl = prepare_datalist("brats", brats, out, sequence="flair", test_fraction=0.25, val_fraction=0.25)
    _load_all(out)
    assert dl["label_map"] == BRATS_LABEL_MAP and dl["label_remap_required"] is True
    assert dl["labels"]["3"] == "enhancing_tumour" and dl["num_classes"] == 4
    assert all(it["image"].endswith("_flair.nii.gz") and it["case_id"].endswith("_flair") for it in dl["training"])
    remapped = tmp_path / "seg_remapped"
    dl2 = prepare_datalist("brats", brats, tmp_path / "brats2.json", remap_dir=remapped)
    assert dl2["label_remap_required"] is False
    items = [it for v in _load_all(tmp_path / "brats2.json").values() for it in v]
    assert len(items) == 4
    for it in items:
        assert Path(it["label"]).parent == remapped
        new = np.asarray(nib.load(it["label"]).dataobj)
        old = np.asarray(nib.load(it["metadata"]["label_original"]).dataobj)
        assert set(np.unique(new)) == {0, 1, 2, 3} and np.array_equal(new == 3, old == 4)
        assert np.array_equal(new[old != 4], old[old != 4])


def test_slices_patient_regex_manifest_and_test_ids(slices, tmp_path):
    out = tmp_path / "slices.json"
    dl = prepare_datalist(
        "slices", slices, out, modality="mri", patient_regex=r"^(patient\d+)", test_ids=["013", "024"],
        labels="0:background,1:right_ventricle,2:myocardium,3:left_ventricle", val_fraction=0.2,
    )  # fmt: skip
    items = _load_all(out)
    assert dl["tensorImageSize"] == "2D" and dl["modality"] == {"0": "MRI"}
    assert {it["metadata"]["patient_id"] for it in items["test"]} == {"patient013", "patient024"}
    assert len(items["test"]) == 8 and len(items["validation"]) == 8 and len(items["training"]) == 20
    it = items["training"][0]
    assert it["metadata"]["manifest"]["patient"] == it["metadata"]["patient_id"]
    assert len(it["metadata"]["shape"]) == 2 and "spacing" not in it["metadata"]
    # --test-pattern on case ids; inferred classes when no --labels are given
    dl2 = prepare_datalist(
        "slices", slices, tmp_path / "s2.json", modality="CT", test_pattern="patient05*", manifest=None
    )
    assert dl2["split"]["patients"]["test"] == ["patient059_frame01_slice00", "patient059_frame01_slice01",
                                                "patient059_frame02_slice00", "patient059_frame02_slice01"]  # fmt: skip
    assert dl2["labels"] == {"0": "background", "1": "class_1", "2": "class_2", "3": "class_3"}
    assert "manifest" not in dl2["training"][0]["metadata"]


def test_monai_can_load_and_collate_a_batch(slices, tmp_path):
    from monai.data import DataLoader, Dataset, load_decathlon_datalist
    from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged, Resized

    out = tmp_path / "s.json"
    prepare_datalist("slices", slices, out, modality="MRI", patient_regex=r"^(patient\d+)", labels="0:bg,1:a,2:b,3:c")
    data = load_decathlon_datalist(out)
    tf = Compose([LoadImaged(["image", "label"], image_only=True), EnsureChannelFirstd(["image", "label"]),
                  Resized(["image", "label"], (8, 8), mode=("bilinear", "nearest"))])  # fmt: skip
    batch = next(iter(DataLoader(Dataset(data, tf), batch_size=4)))
    assert batch["image"].shape == (4, 1, 8, 8) and len(batch["case_id"]) == 4
    assert len(batch["metadata"]["patient_id"]) == 4


# ----------------------------------------------------------------------------------------------- layout registry
def test_every_layout_is_a_finder_with_one_signature():
    import inspect

    from scripts.data.layouts import get_finder

    assert set(LAYOUTS) == {"msd", "nnunet", "acdc", "brats", "slices"}
    for name, finder in LAYOUTS.items():
        assert list(inspect.signature(finder).parameters) == ["input_dir", "options"], name
        assert get_finder(name.upper()) is finder
    with pytest.raises(DataPreparationError, match=r"unknown layout 'dicom'; choose one of \['msd', 'nnunet'"):
        get_finder("DICOM")
    with pytest.raises(DataPreparationError, match="unknown layout 'dicom'"):
        prepare_datalist("dicom", ".")


def test_finders_apply_their_options(acdc, brats):
    opts = LayoutOptions(modality="T2", labels="0:bg,1:a,2:b,3:c", patient_regex=r"^patient00(\d)")
    found = find_acdc_cases(acdc, opts)
    assert {c.modality for c in found.cases} == {"MRI"} and found.labels["1"] == "a" and not found.problems
    assert sorted({c.patient_id for c in found.cases}) == ["1", "2", "3", "4", "5"]
    assert found.label_map == {"0": 0, "1": 1, "2": 2, "3": 3}
    b = find_brats_cases(brats, LayoutOptions(sequence="T2", labels="0:bg,1:x,2:y,3:z", patient_regex="nomatch"))
    assert b.labels["3"] == "z" and b.label_map == BRATS_LABEL_MAP, "BraTS keeps its value map when renamed"
    assert len(b.problems) == 4 and "does not match --patient-regex 'nomatch'" in b.problems[0]
    assert all(c.image.name.endswith("_t2.nii.gz") for c in b.cases)


def test_a_registered_layout_goes_through_prepare(msd, tmp_path, monkeypatch):
    monkeypatch.setitem(LAYOUTS, "toy", lambda root, options: find_msd_cases(root, options))
    dl = prepare_datalist("toy", msd, tmp_path / "toy.json", test_fraction=0)
    assert dl["layout"] == "toy" and dl["numTraining"] + dl["numValidation"] == 6
    assert dl["training"][0]["metadata"]["source"].startswith("toy:imagesTr/")


# ----------------------------------------------------------------------------------------------- malformed input
def _expect_error(match: str, *args, **kwargs) -> str:
    with pytest.raises(DataPreparationError, match=match) as e:
        prepare_datalist(*args, **kwargs)
    return str(e.value)


def test_missing_label(acdc, msd, slices, brats):
    (acdc / "training" / "patient002" / "patient002_frame09_gt.nii.gz").unlink()
    msg = _expect_error("missing label", "acdc", acdc)
    assert "patient002_frame09.nii.gz" in msg and "patient002_frame09_gt.nii.gz" in msg
    (msd / "labelsTr" / "la_004.nii.gz").unlink()
    assert "imagesTr/la_004.nii.gz" in _expect_error("missing label", "msd", msd)
    (slices / "labels" / "patient013_frame01_slice00.png").unlink()
    assert "patient013_frame01_slice00.png" in _expect_error("missing label", "slices", slices, modality="MRI")
    (brats / "BraTS2021_00001" / "BraTS2021_00001_seg.nii.gz").unlink()
    assert "BraTS2021_00001_seg.nii.gz" in _expect_error("missing label", "brats", brats)
    (brats / "BraTS2021_00002" / "BraTS2021_00002_t1ce.nii.gz").unlink()
    assert "BraTS2021_00002_t1ce.nii.gz" in _expect_error("missing t1ce image", "brats", brats)


def test_shape_mismatch(msd, slices):
    _nii(msd / "labelsTr" / "la_002.nii.gz", np.zeros((8, 8, 4), np.uint8))
    msg = _expect_error("shape mismatch", "msd", msd)
    assert "la_002.nii.gz" in msg and "(8, 8, 3)" in msg and "(8, 8, 4)" in msg
    _png(slices / "labels" / "patient001_frame01_slice01.png", np.zeros((5, 5), np.uint8))
    assert "patient001_frame01_slice01.png" in _expect_error("shape mismatch", "slices", slices, modality="MRI")


def test_unreadable_and_truncated_files(msd, acdc, slices):
    (msd / "imagesTr" / "la_003.nii.gz").write_bytes(b"this is not a NIfTI file")
    assert "la_003.nii.gz" in _expect_error("unreadable or corrupt", "msd", msd)
    gt = acdc / "training" / "patient001" / "patient001_frame01.nii.gz"
    data = gt.read_bytes()
    gt.write_bytes(data[: len(data) // 2])  # header still parses: only the size check can catch it
    assert "patient001_frame01.nii.gz" in _expect_error("unreadable or corrupt", "acdc", acdc, check_values=False)
    (slices / "images" / "patient024_frame02_slice01.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    assert "patient024_frame02_slice01.png" in _expect_error("unreadable or corrupt", "slices", slices, modality="MRI")


def test_truncation_check_reads_headers_only_for_intact_files(msd, monkeypatch):
    from scripts.data import _readers

    calls = []
    monkeypatch.setattr(_readers, "_read_all", lambda img: calls.append(img))
    prepare_datalist("msd", msd, None, check_values=False)
    assert calls == [], "intact .nii.gz files must not be decompressed"
    path = msd / "imagesTr" / "la_002.nii.gz"
    path.write_bytes(path.read_bytes()[:-9])
    prepare_datalist("msd", msd, None, check_values=False)  # the stub does not raise ...
    assert len(calls) == 1  # ... but the truncated file failed the cheap test and was read in full


def test_empty_folders(tmp_path):
    (tmp_path / "e" / "imagesTr").mkdir(parents=True)
    (tmp_path / "e" / "dataset.json").write_text(json.dumps({"labels": {"0": "bg"}, "modality": {"0": "CT"}}))
    assert str(tmp_path / "e" / "imagesTr") in _expect_error("empty folder", "msd", tmp_path / "e")
    (tmp_path / "a").mkdir()
    assert str(tmp_path / "a") in _expect_error("empty folder", "acdc", tmp_path / "a")
    assert str(tmp_path / "a") in _expect_error("empty folder", "brats", tmp_path / "a")
    (tmp_path / "s" / "images").mkdir(parents=True)
    assert str(tmp_path / "s" / "images") in _expect_error("empty folder", "slices", tmp_path / "s", modality="CT")
    _expect_error("input folder not found", "acdc", tmp_path / "missing")


def test_label_values_outside_the_classes(msd, brats, slices):
    _nii(msd / "labelsTr" / "la_005.nii.gz", np.full((8, 8, 3), 7, np.uint8))
    msg = _expect_error("outside the declared classes", "msd", msd)
    assert "la_005.nii.gz" in msg and "[7]" in msg
    prepare_datalist("msd", msd, None, check_values=False)  # the value check can be skipped
    seg = brats / "BraTS2021_00003" / "BraTS2021_00003_seg.nii.gz"
    _nii(seg, np.full((8, 8, 5), 3, np.uint8), (1.0, 1.0, 1.0))  # BraTS 2021 has no label 3
    assert "BraTS2021_00003_seg.nii.gz" in _expect_error(r"values \[3\] outside", "brats", brats)
    _png(slices / "labels" / "patient030_frame01_slice00.png", np.full((12, 10), 9, np.uint8))
    msg = _expect_error("outside", "slices", slices, modality="MRI", labels="0:bg,1:a,2:b,3:c")
    assert "patient030_frame01_slice00.png" in msg
    _png(slices / "labels" / "patient030_frame01_slice00.png", np.zeros((12, 10, 3), np.uint8))
    assert "patient030_frame01_slice00.png" in _expect_error("single-channel", "slices", slices, modality="MRI")


def test_all_problems_are_reported_together(msd):
    (msd / "labelsTr" / "la_001.nii.gz").unlink()
    _nii(msd / "labelsTr" / "la_002.nii.gz", np.zeros((8, 8, 4), np.uint8))
    msg = _expect_error("2 problem", "msd", msd)
    assert "la_001" in msg and "la_002" in msg


# ----------------------------------------------------------------------------------------------- split and helpers
def test_split_patients():
    pats = [f"patient{i:03d}" for i in range(1, 21)]
    s = split_patients(pats, val_fraction=0.1, test_fraction=0.2, seed=0)
    assert [sum(v == k for v in s.values()) for k in SPLITS] == [14, 2, 4]
    assert s == split_patients(list(reversed(pats)), 0.1, 0.2, seed=0), "order of the input must not matter"
    assert s != split_patients(pats, 0.1, 0.2, seed=1)
    fixed = split_patients(pats, 0.1, seed=0, test_ids=["013", "19", "patient007"])
    assert sorted(p for p, v in fixed.items() if v == "test") == ["patient007", "patient013", "patient019"]
    with pytest.raises(DataPreparationError, match="'099' matches no patient"):
        split_patients(pats, test_ids=["099"])
    with pytest.raises(DataPreparationError, match="matches no case"):
        split_patients(pats, test_pattern="test_*")
    with pytest.raises(DataPreparationError, match="no training patient"):
        split_patients(["a", "b"], test_ids=["a", "b"])


def test_helpers():
    assert (
        normalize_modality("T1gd") == "MRI" and normalize_modality("ct") == "CT" and normalize_modality("MR") == "MRI"
    )
    with pytest.raises(DataPreparationError, match="--modality"):
        normalize_modality("noNorm")
    assert parse_labels("1:RV, 2:MYO") == {"0": "background", "1": "RV", "2": "MYO"}
    assert parse_labels('{"0": "bg", "1": "x"}') == {"0": "bg", "1": "x"}


def test_cli(slices, tmp_path, capsys):
    out = tmp_path / "cli.json"
    assert main(["slices", "--preset", "acdc", "--input", str(slices), "--output", str(out), "-q"]) == 0
    dl = json.loads(out.read_text())
    assert dl["split"]["patients"]["test"] == ["patient013", "patient024", "patient059", "patient066", "patient080",
                                               "patient093"]  # fmt: skip
    # preset: the protocol's ACDC test ids
    assert dl["labels"]["2"] == "myocardium"
    _load_all(out)
    (slices / "labels" / "patient030_frame01_slice00.png").unlink()
    assert main(["slices", "--preset", "acdc", "--input", str(slices), "--output", str(tmp_path / "x.json")]) == 2
    assert "patient030_frame01_slice00.png" in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()
    r = subprocess.run([sys.executable, "-m", "scripts.data.prepare", "--help"], cwd=BUNDLE, capture_output=True,
                       text=True, timeout=120)  # fmt: skip
    assert r.returncode == 0 and "brats" in r.stdout and "RuntimeWarning" not in r.stderr
