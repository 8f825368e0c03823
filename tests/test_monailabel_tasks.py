"""MONAI Label's BundleInferTask and the app's trainer (``tools/monailabel_train.py``: BundleTrainTask with the
bundle's ``monailabel.json`` overlay) on the bundle, called directly (no server).

Uses a copy of the bundle with the ``tiny`` network preset (``tests/tiny_bundle.py``) and synthetic phantom volumes.
The weights are chosen so that outputs are known exactly: the segmentation head's last conv is zeroed with a
one-hot bias (every voxel is class 2) and the restoration head is zeroed (``restored`` = the network input, via the
global residual), so the tests check the whole serving path (geometry, label values, intensity units), not shapes
only.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from tiny_bundle import NAME, constant_head_state, make_tiny_bundle, network_state, write_study, write_weights

pytestmark = pytest.mark.slow

LABELS = {"adjacent_structure": 1, "enclosing_organ": 2, "inner_region": 3}
TOOLS = Path(__file__).resolve().parents[1] / "tools"


@pytest.fixture(autouse=True)
def _isolate_scripts_package():
    """MONAI Label unloads and re-imports the top-level ``scripts`` package from the bundle it serves; restore the
    repository's modules (and sys.path) afterwards so that other tests keep using their own."""
    saved_mods = {k: v for k, v in sys.modules.items() if k == "scripts" or k.startswith("scripts.")}
    saved_path = list(sys.path)
    yield
    for k in [k for k in sys.modules if k == "scripts" or k.startswith("scripts.")]:
        del sys.modules[k]
    sys.modules.update(saved_mods)
    sys.path[:] = saved_path


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("ml_tasks")
    bundle = make_tiny_bundle(root / NAME, weights=False)
    state = constant_head_state(network_state(bundle), seg_class=2, identity_restore=True)
    write_weights(bundle, state)
    study = write_study(root / "studies", names=("img0", "img1"))
    return {"root": root, "bundle": bundle, "study": study}


def _infer(task, image):
    from monailabel.tasks.infer.bundle import BundleInferTask

    assert isinstance(task, BundleInferTask)
    return task({"image": str(image), "device": "cpu"})


def test_infer_task_reads_the_bundle_metadata(env):
    from monailabel.tasks.infer.bundle import BundleInferTask

    task = BundleInferTask(str(env["bundle"]), {"preload": "false"})
    assert task.is_valid()
    assert task.labels == LABELS
    info = task.info()
    assert info["type"] == "segmentation" and info["version"]


def test_infer_task_returns_segmentation_and_restored_volume(env):
    from monailabel.tasks.infer.bundle import BundleInferTask

    case = env["study"]["img0"]
    task = BundleInferTask(str(env["bundle"]), {"preload": "false"})
    seg_file, result = _infer(task, case["image"])
    seg = nib.load(seg_file)
    raw = case["image_array"].astype(np.float32)
    assert seg.shape == raw.shape
    assert np.allclose(seg.affine, case["affine"])
    np.testing.assert_array_equal(np.asarray(seg.dataobj), 2)  # the constant head's class, in every voxel
    assert result["label_names"] == LABELS

    # the restored volume: path in the JSON result, same geometry, back in the input's intensity units
    path = result["restored"]
    assert os.path.isfile(path) and path.endswith("_restored.nii.gz")
    rest = nib.load(path)
    assert rest.shape == raw.shape and np.allclose(rest.affine, case["affine"])
    r = np.asarray(rest.dataobj, dtype=np.float32)
    # identity restoration head: restored = normalised input mapped back; the voxels the percentile normalisation
    # clipped keep the input's value (RestoreInputUnitsd), so the whole volume comes back
    np.testing.assert_allclose(r, raw, atol=1e-3 * float(np.ptp(raw)))
    os.unlink(seg_file)


def test_restore_task_serves_the_restored_volume_as_its_result(env):
    """The second model folder of tools/monailabel_app.py returns the restored volume as the result image."""
    from monailabel.tasks.infer.bundle import BundleInferTask
    from monailabel.tasks.train.bundle import BundleTrainTask

    sys.path.insert(0, str(TOOLS))
    import monailabel_app

    info = monailabel_app.prepare_app(env["root"] / "app", bundle_dir=env["bundle"], name=NAME)
    view = info["model_dirs"][1]
    task = BundleInferTask(str(view), {"preload": "false"})
    assert task.is_valid() and task.labels == {}
    assert not BundleTrainTask(str(view), {}).is_valid()  # serving only: no trainer for the view

    case = env["study"]["img1"]
    out_file, result = _infer(task, case["image"])
    out = nib.load(out_file)
    assert out.shape == case["image_array"].shape and np.allclose(out.affine, case["affine"])
    served = np.asarray(out.dataobj, dtype=np.float32)
    saved = np.asarray(nib.load(result["restored"]).dataobj, dtype=np.float32)
    np.testing.assert_allclose(served, saved, rtol=1e-5, atol=1e-3)
    assert len(np.unique(served)) > 10  # an image, not a label map
    os.unlink(out_file)


def test_train_preprocessing_derives_degraded_input_and_target_from_image_label_pairs(env):
    """What BundleTrainTask hands over is only {image, label}; train#preprocessing must make the rest."""
    from monai.bundle import ConfigParser

    sys.path.insert(0, str(env["bundle"]))
    parser = ConfigParser()
    parser.read_config(str(env["bundle"] / "configs" / "train.json"))
    parser["bundle_root"] = str(env["bundle"])
    case = write_study(env["root"] / "prep", names=("p0",), labels_dir=env["root"] / "prep" / "labels")["p0"]
    pre = parser.get_parsed_content("train#preprocessing", instantiate=True)
    out = pre({"image": str(case["image"]), "label": str(case["label"])})
    items = out if isinstance(out, list) else [out]
    assert items
    for d in items:
        assert {"image", "target", "label", "modality", "degradation"} <= set(d)
        img, tgt = torch.as_tensor(d["image"]).float(), torch.as_tensor(d["target"]).float()
        assert img.shape == tgt.shape == torch.as_tensor(d["label"]).shape
        assert 0.0 <= float(tgt.min()) and float(tgt.max()) <= 1.0
        mse = float(((img - tgt) ** 2).mean())
        assert mse > 1e-6, "the network input is not degraded"
        assert 10 * np.log10(1.0 / mse) > 5, "the degraded input does not resemble the target"
        assert set(torch.unique(torch.as_tensor(d["label"])).tolist()) <= {0, 1, 2, 3}


def test_train_task_derives_the_input_and_updates_model_pt_without_validation_data(env, tmp_path, monkeypatch):
    """One labelled image: MONAI Label's 80/20 split leaves no validation data; the run must still leave the new
    weights in models/model.pt (the next /infer uses them)."""
    from monailabel.datastore.local import LocalDatastore

    monkeypatch.setenv("VLDUN_DEMO_ROOT", str(tmp_path / "demo_data"))  # see test_monailabel_server.py
    studies = tmp_path / "studies"
    write_study(studies, names=("img0",), labels_dir=studies / "labels" / "final")
    ds = LocalDatastore(str(studies))
    assert [sorted(d) for d in ds.datalist()] == [["image", "label"]]

    task = _train_task(env["bundle"])
    assert task.is_valid()
    model = env["bundle"] / "models" / "model.pt"
    before, w0 = model.stat().st_mtime_ns, torch.load(model, weights_only=True)
    request = {"model": NAME, "max_epochs": 1, "device": "cpu", "multi_gpu": False, "val_split": 0.2}
    task(request, ds)
    assert model.stat().st_mtime_ns > before, "model.pt was not rewritten by a MONAI Label training run"
    w1 = torch.load(model, weights_only=True)  # a plain state_dict (MONAI Label loads with weights_only)
    assert set(w1) == set(w0) and all(isinstance(v, torch.Tensor) for v in w1.values())
    assert any(not torch.equal(w0[k], w1[k]) for k in w0), "training did not change the weights"
    _assert_packager_accepts_the_weights(env["bundle"])


def test_train_task_with_validation_data_keeps_the_best_model(env, tmp_path):
    """Three labelled images: one goes to validation; model.pt is then written by the validation-driven saver."""
    from monailabel.datastore.local import LocalDatastore

    studies = tmp_path / "studies"
    write_study(studies, names=("a", "b", "c"), labels_dir=studies / "labels" / "final", seed=3)
    model = env["bundle"] / "models" / "model.pt"
    record = model.with_name("model.pt.json")
    if record.exists():
        record.unlink()
    before = model.stat().st_mtime_ns
    task = _train_task(env["bundle"])
    request = {"model": NAME, "max_epochs": 1, "device": "cpu", "multi_gpu": False, "val_split": 0.2}
    task(request, LocalDatastore(str(studies)))
    assert model.stat().st_mtime_ns > before
    assert record.is_file(), "with validation data the best-model saver (and its record) should write model.pt"
    _assert_packager_accepts_the_weights(env["bundle"])


def _train_task(bundle: Path):
    """The app's trainer (``tools/monailabel_train.py``): MONAI Label's ``BundleTrainTask`` reading ``train.json``
    with the bundle's ``monailabel.json`` overlay merged over it."""
    sys.path.insert(0, str(TOOLS))
    from monailabel_train import VLDUNTrainTask

    return VLDUNTrainTask(str(bundle), {})


def _assert_packager_accepts_the_weights(bundle: Path) -> None:
    """/train replaces model.pt through the app's link to the bundle; the provenance record next to it must follow,
    or tools/package_bundle.py refuses the weights (the bundle copy started with a record of the previous ones)."""
    sys.path.insert(0, str(TOOLS))
    import package_bundle

    _, problem = package_bundle.weights_provenance(bundle)
    assert problem is None, problem
