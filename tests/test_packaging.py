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
        "configs/monailabel_train.json",
    ]
    for rel in junk:
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
        (dst / rel).write_bytes(b"junk")
    torch.save({"w": torch.arange(4.0)}, dst / "models" / "model.pt")
    _record(dst)
    return dst, [*junk, "models/model.pt.json"]


def _record(bundle_dir) -> Path:
    """``models/model.pt.json`` as training writes it (scripts/workflows/checkpoint.py) for the current weights."""
    weights = Path(bundle_dir) / "models" / "model.pt"
    rec = {
        "metric": "val_mean_dice",
        "value": 0.5,
        "epoch": 3,
        "sha256": hashlib.sha256(weights.read_bytes()).hexdigest(),
    }
    path = weights.with_name("model.pt.json")
    path.write_text(json.dumps(rec))
    return path


def test_bundle_files_are_only_what_a_bundle_carries(bundle_copy):
    src, junk = bundle_copy
    files = package_bundle.bundle_files(src)
    for required in (
        "LICENSE",
        "large_files.yml",
        "configs/metadata.json",
        "configs/inference.json",
        "configs/train.json",
        "configs/monailabel.json",
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
    """No weights are published, so the repository's record lists none (no made-up URL) and downloading is a no-op."""
    from monai.bundle.scripts import download_large_files

    text = (BUNDLE / "large_files.yml").read_text()
    assert yaml.safe_load(text)["large_files"] == []
    assert "No weights are published yet" in text
    assert text == package_bundle.large_files_yaml(NAME, VERSION, None), "write it with the packager's template"
    for source in (text, package_bundle.RELEASE_URL_PATTERN, (ROOT / "tools" / "package_bundle.py").read_text()):
        assert "OWNER/REPO" not in source
    download_large_files(bundle_path=str(BUNDLE))


def test_release_weights_are_restored_from_the_asset_next_to_the_archive(bundle_copy, tmp_path, monkeypatch):
    """The packaged large_files.yml is usable: with its weights deleted, an unpacked release gets them back from the
    release asset (md5-checked), the way a published release would from its host."""
    from monai.bundle.scripts import download_large_files

    src, _ = bundle_copy
    info = package_bundle.build_archive(src, tmp_path / "dist", name=NAME)
    with zipfile.ZipFile(info["archive"]) as zf:
        zf.extractall(tmp_path / "dist")
    unpacked = tmp_path / "dist" / NAME
    (unpacked / "models" / "model.pt").unlink()
    monkeypatch.chdir(tmp_path / "dist")
    download_large_files(bundle_path=str(unpacked))
    assert _md5(unpacked / "models" / "model.pt") == info["weights_md5"]


def _package(src, tmp_path, capsys, *extra):
    rc = package_bundle.main(["--bundle", str(src), "--output", str(tmp_path / "dist"), "--no-check", *extra])
    return rc, capsys.readouterr()


def test_weights_matching_their_provenance_record_are_packaged(bundle_copy, tmp_path, capsys):
    src, _ = bundle_copy
    rc, out = _package(src, tmp_path, capsys)
    assert rc == 0, out.err
    summary = json.loads(out.out.splitlines()[-1])
    assert summary["weights_record"]["sha256"] == hashlib.sha256((src / "models" / "model.pt").read_bytes()).hexdigest()
    assert "WARNING" not in out.err


def test_weights_replaced_after_their_record_are_refused(bundle_copy, tmp_path, capsys):
    """What MONAI Label's /train used to leave behind: new weights, the previous run's record."""
    src, _ = bundle_copy
    recorded = json.loads((src / "models" / "model.pt.json").read_text())["sha256"]
    torch.save({"w": torch.ones(4)}, src / "models" / "model.pt")
    actual = hashlib.sha256((src / "models" / "model.pt").read_bytes()).hexdigest()
    rc, out = _package(src, tmp_path, capsys)
    assert rc != 0
    assert str(src / "models" / "model.pt") in out.err and str(src / "models" / "model.pt.json") in out.err
    assert recorded in out.err and actual in out.err and "--allow-unrecorded-weights" in out.err
    assert not (tmp_path / "dist").exists(), "nothing may be written when the weights are refused"


@pytest.mark.parametrize(
    "record, problem",
    [(None, "missing"), ({"metric": "val_mean_dice", "value": 0.5, "epoch": 3}, "no sha256"), ("{", "not JSON")],
)
def test_weights_without_a_usable_record_are_refused(bundle_copy, tmp_path, capsys, record, problem):
    src, _ = bundle_copy
    path = src / "models" / "model.pt.json"
    if record is None:
        path.unlink()
    else:
        path.write_text(record if isinstance(record, str) else json.dumps(record))
    rc, out = _package(src, tmp_path, capsys)
    assert rc != 0 and problem in out.err and str(path) in out.err


def test_unrecorded_weights_are_packaged_with_a_warning_when_allowed(bundle_copy, tmp_path, capsys):
    src, _ = bundle_copy
    torch.save({"w": torch.ones(4)}, src / "models" / "model.pt")
    rc, out = _package(src, tmp_path, capsys, "--allow-unrecorded-weights")
    assert rc == 0, out.err
    assert "WARNING" in out.err and str(src / "models" / "model.pt.json") in out.err
    summary = json.loads(out.out.splitlines()[-1])
    assert "does not match" in summary["weights_unrecorded"] and summary["weights_md5"] == _md5(
        src / "models" / "model.pt"
    )


def test_a_code_only_archive_needs_no_record(bundle_copy, tmp_path, capsys):
    src, _ = bundle_copy
    (src / "models" / "model.pt.json").unlink()
    rc, out = _package(src, tmp_path, capsys, "--no-weights")
    assert rc == 0, out.err


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
def test_torch_export_takes_any_multiple_of_8_and_matches_eager(tmp_path):
    """One exported program, traced at 40 x 48, runs at 24 x 72 and 64 x 64 like the eager network; its size is
    measured against the weights' (TorchScript is not possible, docs/README.md)."""
    src = make_tiny_bundle(tmp_path / NAME)
    out = tmp_path / "seg.pt2"
    report = package_bundle.export_program(src, out, (40, 48), check_shape=(24, 72))
    assert out.is_file() and report["file_bytes"] == out.stat().st_size
    assert report["multiple"] == 8 and report["size_range"] == list(package_bundle.EXPORT_SIZE_RANGE)
    assert set(report["max_abs_diff"]) == {"40x48", "24x72"} and max(report["max_abs_diff"].values()) < 1e-4, report
    print(f"exported tiny: {report['file_bytes'] / 1e6:.1f} MB for {report['weights_bytes'] / 1e6:.1f} MB of weights")
    assert report["file_bytes"] < 10 * report["weights_bytes"], report
    program = torch.export.load(str(out)).module()
    sys.path.insert(0, str(src))
    try:
        from monai.bundle import ConfigParser

        parser = ConfigParser()
        parser.read_config(str(src / "configs" / "inference.json"))
        parser.update({"bundle_root": str(src), "network_def#output": "seg"})
        net = parser.get_parsed_content("network_def", instantiate=True)
        net.load_state_dict(torch.load(src / "models" / "model.pt", weights_only=True))
        net.eval()
        x = torch.rand(1, 1, 64, 64, generator=torch.Generator().manual_seed(3))
        with torch.no_grad():
            y, y_ref = program(x), net(x)
    finally:
        sys.path.remove(str(src))
    assert y.shape == (1, 4, 64, 64) and float((y - y_ref).abs().max()) < 1e-4
    with pytest.raises(Exception, match="h_blocks|size|Guard|constraint"):
        program(torch.zeros(1, 1, 60, 64))  # not a multiple of 8: the caller pads (the network itself does too)
