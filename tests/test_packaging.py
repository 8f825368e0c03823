"""Model Zoo distribution: tools/package_bundle.py (archive contents, md5 record, unpack-load-infer check),
``verify_net_in_out`` on the shipped configs, and the export route."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
import yaml
from tiny_bundle import NAME, make_tiny_bundle, network_state, write_weights

ROOT = Path(__file__).resolve().parents[1]
BUNDLE = ROOT / "bundle"
sys.path.insert(0, str(ROOT / "tools"))

import package_bundle  # noqa: E402

VERSION = json.loads((BUNDLE / "configs" / "metadata.json").read_text())["version"]


def _md5(path) -> str:
    return hashlib.md5(Path(path).read_bytes()).hexdigest()


@pytest.fixture()
def bundle_copy(tmp_path):
    """The bundle's files without weights or run outputs, plus junk that must never be packaged."""
    dst = tmp_path / "bundle"
    shutil.copytree(BUNDLE, dst, ignore=shutil.ignore_patterns("eval", "runs", ".cache", "__pycache__", "*.pt", "*.ts"))
    junk = [
        "scripts/__pycache__/x.cpython-311.pyc",
        "scripts/networks/.notes.md",
        "scripts/leftover.tmp",
        "eval/inference/case_seg.nii.gz",
        "runs/events.out",
        ".cache/demo_data/datalist.json",
        "mlruns/0/meta.yaml",
        "models/checkpoint_latest.pt",
        "models/model.pt.json",
        "configs/monailabel_train.json",
    ]
    for rel in junk:
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
        (dst / rel).write_bytes(b"junk")
    torch.save({"w": torch.arange(4.0)}, dst / "models" / "model.pt")
    return dst, junk


def test_bundle_files_are_only_what_a_bundle_carries(bundle_copy):
    src, junk = bundle_copy
    files = package_bundle.bundle_files(src)
    for required in (
        "LICENSE",
        "large_files.yml",
        "configs/metadata.json",
        "configs/inference.json",
        "configs/train.json",
        "configs/logging.conf",
        "scripts/__init__.py",
        "scripts/serving.py",
        "scripts/networks/clip_configs/vldun-clip-tiny.json",
        "models/model.pt",
    ):
        assert required in files, required
    for rel in junk:
        assert rel not in files, rel
    assert not any("__pycache__" in f or f.startswith(("eval/", "runs/", ".cache/", "mlruns/")) for f in files)
    assert "models/model.pt" not in package_bundle.bundle_files(src, weights=False)


def test_missing_required_file_is_an_error(bundle_copy):
    src, _ = bundle_copy
    (src / "configs" / "inference.json").unlink()
    with pytest.raises(FileNotFoundError, match="inference.json"):
        package_bundle.bundle_files(src)


def test_archive_is_versioned_reproducible_and_records_the_weights_md5(bundle_copy, tmp_path):
    src, _ = bundle_copy
    lf_before = (src / "large_files.yml").read_text()
    a = package_bundle.build_archive(src, tmp_path / "dist1", name=NAME)
    b = package_bundle.build_archive(src, tmp_path / "dist2", name=NAME)
    assert a["archive"].name == f"{NAME}_v{VERSION}.zip"
    assert a["archive_md5"] == b["archive_md5"] == _md5(a["archive"])  # same inputs, same bytes
    assert (tmp_path / "dist1" / f"{NAME}_v{VERSION}.zip.md5").read_text().split()[0] == a["archive_md5"]
    weights_md5 = _md5(src / "models" / "model.pt")
    assert a["weights_md5"] == weights_md5
    assert _md5(a["weights_asset"]) == weights_md5 and a["weights_asset"].name == f"{NAME}_v{VERSION}_model.pt"
    with zipfile.ZipFile(a["archive"]) as zf:
        names = zf.namelist()
        assert all(n.startswith(f"{NAME}/") for n in names)
        assert sorted(n[len(NAME) + 1 :] for n in names) == a["files"]
        lf = yaml.safe_load(zf.read(f"{NAME}/large_files.yml"))["large_files"][0]
        assert zf.read(f"{NAME}/models/model.pt") == (src / "models" / "model.pt").read_bytes()
    assert lf["path"] == "models/model.pt" and lf["hash_type"] == "md5" and lf["hash_val"] == weights_md5
    assert f"v{VERSION}" in lf["url"] and lf["url"].endswith(a["weights_asset"].name)
    assert (src / "large_files.yml").read_text() == lf_before  # only --update-large-files touches the bundle

    package_bundle.build_archive(src, tmp_path / "dist3", name=NAME, update_large_files=True)
    assert yaml.safe_load((src / "large_files.yml").read_text())["large_files"][0]["hash_val"] == weights_md5


def test_shipped_large_files_yml_is_valid_and_honest():
    lf = yaml.safe_load((BUNDLE / "large_files.yml").read_text())["large_files"]
    assert [e["path"] for e in lf] == ["models/model.pt"]
    assert lf[0]["hash_type"] == "md5" and f"v{VERSION}" in lf[0]["url"]
    assert "No hosted release exists yet" in (BUNDLE / "large_files.yml").read_text()


def test_version_needs_a_changelog_entry(bundle_copy, tmp_path):
    src, _ = bundle_copy
    meta = json.loads((src / "configs" / "metadata.json").read_text())
    meta["version"] = "9.9.9"
    (src / "configs" / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="changelog"):
        package_bundle.build_archive(src, tmp_path / "dist", name=NAME)


@pytest.mark.slow
def test_archive_check_loads_and_infers_from_the_unpacked_folder(tmp_path):
    src = make_tiny_bundle(tmp_path / NAME)
    info = package_bundle.build_archive(src, tmp_path / "dist", name=NAME)
    report = package_bundle.check_archive(info["archive"], NAME)
    assert report["weights_in_archive"] and report["monai_bundle_load"] == "VLDUN"
    assert report["seg_shape"][:3] == [48, 40, 5]
    assert set(report["labels"]) <= {0, 1, 2, 3}
    assert any("restored" in o for o in report["outputs"])


@pytest.mark.slow
def test_archive_check_fails_when_the_weights_do_not_fit_the_network(tmp_path):
    src = make_tiny_bundle(tmp_path / NAME, weights=False)
    state = network_state(src)
    state.pop(next(iter(state)))  # a truncated checkpoint
    write_weights(src, state)
    info = package_bundle.build_archive(src, tmp_path / "dist", name=NAME)
    with pytest.raises(RuntimeError, match="bundle check failed"):
        package_bundle.check_archive(info["archive"], NAME)


@pytest.mark.slow
def test_verify_net_in_out_passes_on_the_shipped_configs():
    cmd = [
        sys.executable,
        "-m",
        "monai.bundle",
        "verify_net_in_out",
        "network_def",
        "--meta_file",
        "configs/metadata.json",
        "--config_file",
        "configs/inference.json",
    ]
    res = subprocess.run(cmd, cwd=BUNDLE, capture_output=True, text=True, timeout=600)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-4000:]
    assert "data shape of network is verified with no error" in out


@pytest.mark.slow
def test_torch_export_of_the_segmentation_network_matches_eager(tmp_path):
    """TorchScript is not possible (docs/README.md); the fixed-shape torch.export program must reproduce the network."""
    src = make_tiny_bundle(tmp_path / NAME)
    out = tmp_path / "seg_16x16.pt2"
    report = package_bundle.export_program(src, out, (16, 16))
    assert out.is_file() and report["output_shape"] == [1, 4, 16, 16]
    assert report["max_abs_diff"] < 1e-4, report
    program = torch.export.load(str(out)).module()
    with torch.no_grad():
        y = program(torch.zeros(1, 1, 16, 16))
    assert y.shape == (1, 4, 16, 16) and torch.isfinite(y).all()
