"""The built-in demo phantoms: determinism, caching, decathlon datalist, and labels that sit where the organs are."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from scripts.data import demo
from scripts.data.demo import ensure_demo_data, generate_phantom
from scripts.prompts import MODALITIES

BUNDLE = Path(__file__).resolve().parents[1] / "bundle"


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("demo")
    ensure_demo_data(root, num_cases=8, seed=0)
    return root


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.nii.gz"))} | {
        "datalist.json": (root / "datalist.json").read_bytes()
    }


def test_same_seed_gives_byte_identical_files(tmp_path, demo_root):
    t0 = time.perf_counter()
    ensure_demo_data(tmp_path / "again", num_cases=8, seed=0)
    elapsed = time.perf_counter() - t0
    a, b = _files(demo_root), _files(tmp_path / "again")
    assert len(a) == 17 and a.keys() == b.keys()
    assert all(a[k] == b[k] for k in a), [k for k in a if a[k] != b[k]]
    for name, data in a.items():
        if name.endswith(".gz"):
            assert data[:2] == b"\x1f\x8b" and data[4:8] == b"\0\0\0\0", f"{name}: gzip header has a timestamp"
    assert elapsed < 15, f"default demo generation took {elapsed:.1f} s"
    ensure_demo_data(tmp_path / "other", num_cases=8, seed=1)
    c = _files(tmp_path / "other")
    assert all(a[k] != c[k] for k in a if k.startswith("imagesTr/")), "another seed must give other volumes"


def test_cases_do_not_depend_on_the_number_of_cases(tmp_path, demo_root):
    ensure_demo_data(tmp_path, num_cases=2, seed=0)
    for name in ("imagesTr/demo_mri_000.nii.gz", "labelsTr/demo_ct_000.nii.gz"):
        assert (tmp_path / name).read_bytes() == (demo_root / name).read_bytes()


def test_cache_is_reused_and_regenerated_when_stale(tmp_path):
    path = Path(ensure_demo_data(tmp_path, num_cases=4, seed=0))
    img = tmp_path / "imagesTr" / "demo_mri_001.nii.gz"
    original = img.read_bytes()
    stamps = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*.nii.gz")}
    umask = os.umask(0o022)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask, "files must get normal permissions, not mkstemp's 0600"
    assert ensure_demo_data(tmp_path, num_cases=4, seed=0) == str(path)
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*.nii.gz")} == stamps, "valid cache was rewritten"
    # corrupt file -> regenerated with the same content
    img.write_bytes(b"not a nifti")
    ensure_demo_data(tmp_path, num_cases=4, seed=0)
    assert img.read_bytes() == original
    # missing file -> regenerated
    (tmp_path / "labelsTr" / "demo_ct_001.nii.gz").unlink()
    ensure_demo_data(tmp_path, num_cases=4, seed=0)
    assert (tmp_path / "labelsTr" / "demo_ct_001.nii.gz").is_file()
    # other parameters -> regenerated, stale cases removed
    ensure_demo_data(tmp_path, num_cases=2, seed=0)
    assert not img.exists()
    dl = json.loads(path.read_text())
    assert dl["generator"]["num_cases"] == 2
    manifest = json.loads((tmp_path / demo.MANIFEST_NAME).read_text())
    assert sorted(manifest["files"]) == sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*.*")
                                               if p.name not in (demo.MANIFEST_NAME, ".lock"))  # fmt: skip


def test_default_root_is_git_ignored_cache(monkeypatch, tmp_path):
    monkeypatch.setenv(demo.ENV_ROOT, str(tmp_path / "env"))
    assert demo.default_demo_root() == tmp_path / "env"
    monkeypatch.delenv(demo.ENV_ROOT)
    assert demo.default_demo_root() == BUNDLE / ".cache" / "demo_data"


def test_datalist_is_decathlon_and_monai_reads_it(demo_root):
    from monai.data import load_decathlon_datalist

    dl = json.loads((demo_root / "datalist.json").read_text())
    assert dl["labels"] == {"0": "background", "1": "adjacent_structure", "2": "enclosing_organ", "3": "inner_region"}
    assert dl["num_classes"] == 4 and dl["tensorImageSize"] == "3D"
    ids = {}
    for key in ("training", "validation", "test"):
        items = load_decathlon_datalist(demo_root / "datalist.json", data_list_key=key)
        assert len(items) == dl[{"training": "numTraining", "validation": "numValidation", "test": "numTest"}[key]]
        for it in items:
            assert Path(it["image"]).is_file() and Path(it["label"]).is_file()
            assert it["modality"] in MODALITIES
            assert it["case_id"] not in ids
            ids[it["case_id"]] = key
        assert {it["modality"] for it in items} == {"MRI", "CT"}, f"{key} must hold both modalities"
        raw = dl[key][0]
        assert not os.path.isabs(raw["image"]) and raw["image"].startswith("imagesTr/")
    assert len(ids) == 8 and (dl["numTraining"], dl["numValidation"], dl["numTest"]) == (4, 2, 2)


def _load(root: Path, case_id: str):
    img = nib.load(str(root / "imagesTr" / f"{case_id}.nii.gz"))
    lab = nib.load(str(root / "labelsTr" / f"{case_id}.nii.gz"))
    assert np.allclose(img.affine, lab.affine)
    return np.asarray(img.dataobj), np.asarray(lab.dataobj), img.header.get_zooms()


def _core(mask: np.ndarray) -> np.ndarray:
    """Interior of each slice's region (1-voxel in-plane erosion) to leave out partial-volume voxels."""
    return ndimage.binary_erosion(mask, structure=np.ones((3, 3, 1), bool))


def _region_checks(image, label, info):
    """Each class's region has the class's nominal intensity and sits at the generated organ position."""
    nominal = {int(k): v for k, v in info["nominal"].items()}
    means = {}
    for c in (1, 2, 3):
        core = _core(label == c)
        assert core.sum() >= 5, f"class {c} has almost no interior voxels"
        means[c] = float(image[core].mean())
    xs, ys = np.meshgrid(np.arange(label.shape[0]), np.arange(label.shape[1]), indexing="ij")

    def centroid(mask2d):
        return np.array([xs[mask2d].mean(), ys[mask2d].mean()])

    if info["modality"] == "MRI":
        for c in (1, 2, 3):  # bias field within about +-20 %, Rician noise, texture
            assert 0.75 < means[c] / nominal[c] < 1.3, (c, means[c], nominal[c])
        assert means[2] < 0.5 * min(means[1], means[3]), "myocardium must be darker than the blood pools"
        rv_dir = np.array(info["rv_direction"])
        n_lv = 0
        for k in range(label.shape[2]):
            lv = label[:, :, k] == 3
            if lv.sum() < 3:
                continue
            n_lv += 1
            centre = np.array(info["centres"]["lv"][k])
            assert np.linalg.norm(centroid(lv) - centre) < 1.0, (k, centroid(lv), centre)
            ring = label[:, :, k] == 2
            assert np.linalg.norm(centroid(ring | lv) - centre) < 1.0  # the myocardium encloses the cavity
            rv = label[:, :, k] == 1
            if rv.sum() >= 3:
                assert float(np.dot(centroid(rv) - centre, rv_dir)) > 3.0, "RV is not on its generated side"
        assert n_lv >= label.shape[2] // 2
    else:
        for c in (1, 2, 3):
            assert abs(means[c] - nominal[c]) < 100.0, (c, means[c], nominal[c])
            others = [o for o in (1, 2, 3) if o != c]
            assert all(abs(means[c] - nominal[c]) < abs(means[c] - nominal[o]) for o in others)
        assert image.min() <= -990 and image.max() >= 500  # air and bone are present
        for k in range(label.shape[2]):
            heart = label[:, :, k] == 1
            if heart.sum() >= 3:
                assert np.linalg.norm(centroid(heart) - np.array(info["centres"]["heart"][k])) < 1.0
        lx, ly, lz = info["centres"]["lesion"]
        les = label[:, :, int(lz)] == 3
        assert les.sum() > 0 and np.linalg.norm(centroid(les) - np.array([lx, ly])) < 2.5
        bx = info["centres"]["body"][0]
        x3 = np.broadcast_to(xs[:, :, None], label.shape)
        assert np.sign(x3[label == 3].mean() - bx) == info["lesion_side"], "lesion is not in the generated lung"
        lungs = label == 2
        assert (x3[lungs] < bx - 5).any() and (x3[lungs] > bx + 5).any(), "class 2 must cover both lungs"


def test_labels_occupy_the_generated_regions(demo_root):
    manifest = json.loads((demo_root / demo.MANIFEST_NAME).read_text())
    assert len(manifest["cases"]) == 8
    for case_id, info in manifest["cases"].items():
        image, label, zooms = _load(demo_root, case_id)
        assert image.dtype == np.int16 and label.dtype == np.uint8 and image.shape == (64, 64, 12)
        assert tuple(zooms) == demo.DEMO_SPACING[info["modality"]]
        assert set(np.unique(label)) == {0, 1, 2, 3}
        _region_checks(image, label, info)


def test_region_check_detects_misaligned_labels():
    image, label, _, info = generate_phantom("CT", seed=0, index=0)
    _region_checks(image, label, info)
    with pytest.raises(AssertionError):
        _region_checks(image, np.roll(label, 6, axis=0), info)
    image, label, _, info = generate_phantom("MRI", seed=0, index=0)
    _region_checks(image, label, info)
    with pytest.raises(AssertionError):
        _region_checks(image, np.roll(label, 4, axis=1), info)


def test_more_cases_pass_the_region_check():
    for index in range(2, 8):
        for mod in ("MRI", "CT"):
            image, label, _, info = generate_phantom(mod, seed=5, index=index)
            _region_checks(image, label, info)


def test_modalities_have_different_statistics_and_textures():
    mri, mri_lab, _, _ = generate_phantom("MRI", seed=0, index=0)
    ct, ct_lab, _, _ = generate_phantom("CT", seed=0, index=0)
    assert mri.min() >= 0 and ct.min() < -900
    # MRI air: Rician floor (positive mean); CT air: Gaussian around -1000
    assert 0 < mri[:3, :3].mean() < 0.1 * mri.max()
    assert abs(ct[:3, :3].astype(float).mean() + 1000) < 15

    # texture inside organs: smooth (correlated) in MRI myocardium, fine in CT lung
    def lag1_corr(img, mask):
        m = mask[:-1] & mask[1:]
        a, b = img[:-1][m].astype(float), img[1:][m].astype(float)
        return np.corrcoef(a, b)[0, 1]

    assert lag1_corr(ct, _core(ct_lab == 1)) < lag1_corr(mri, _core(mri_lab == 3))
    # shapes vary across cases and smoothly across slices
    other = generate_phantom("MRI", seed=0, index=1)[1]
    assert (other != mri_lab).mean() > 0.01
    for k in range(5):
        a, b = mri_lab[:, :, k] == 3, mri_lab[:, :, k + 1] == 3
        assert 2 * (a & b).sum() / (a.sum() + b.sum()) > 0.7, "LV must change smoothly between slices"


def test_cli(tmp_path):
    assert demo.main(["--root", str(tmp_path / "a"), "--num-cases", "2", "--seed", "3"]) == 0
    assert (tmp_path / "a" / "datalist.json").is_file()
    out = subprocess.run(
        [sys.executable, "-m", "scripts.data.demo", "--root", str(tmp_path / "b"), "--num-cases", "2", "--seed", "3"],
        cwd=BUNDLE, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "RuntimeWarning" not in out.stderr
    assert str(tmp_path / "b" / "datalist.json") in out.stdout
    assert (tmp_path / "a" / "imagesTr" / "demo_mri_000.nii.gz").read_bytes() == (
        tmp_path / "b" / "imagesTr" / "demo_mri_000.nii.gz"
    ).read_bytes()


def test_bad_arguments():
    with pytest.raises(ValueError):
        generate_phantom("PET")
    with pytest.raises(ValueError):
        ensure_demo_data("/nonexistent-never-created", modalities=("MRI", "MRI"))
