"""End to end: a real ``monailabel start_server`` (MONAI Label 0.8.5, stock ``monaibundle`` app) serving the bundle.

The app folder is made by ``tools/monailabel_app.py`` from a copy of the bundle with the ``tiny`` network preset
(``tests/tiny_bundle.py``); the studies are synthetic phantom volumes. The server runs on 127.0.0.1 on a free port,
offline (``--conf zoo_source local --conf sam2 false``), in its own process group, and is stopped by its process
group id. The tests run in file order against one server: ``/info``, ``/infer`` (segmentation, restored volume, the
restored-image task, uploads), 5 sequential and 3 concurrent requests, and last the annotation loop (infer ->
save a corrected label -> ``/train`` -> the next ``/infer`` uses the new checkpoint).

The starting weights make the outputs known: every voxel is class 2 and the restored image equals the input
(see ``tiny_bundle.constant_head_state``).
"""

from __future__ import annotations

import gzip
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from tiny_bundle import NAME, constant_head_state, make_tiny_bundle, network_state, write_study, write_weights

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

import monailabel_app  # noqa: E402

requests = pytest.importorskip("requests")
pytestmark = pytest.mark.slow

RESTORE = monailabel_app.restore_task_name(NAME)
LABELS = {"adjacent_structure": 1, "enclosing_organ": 2, "inner_region": 3}
START_TIMEOUT = 300
REQUEST_TIMEOUT = 300


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(proc: subprocess.Popen) -> None:
    """Stop the server's whole process group (uvicorn and anything it started)."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    except ProcessLookupError:
        pass


def _nifti(content: bytes):
    with tempfile.NamedTemporaryFile(suffix=".nii.gz", delete=False) as f:
        f.write(content)
    img = nib.load(f.name)
    arr = np.asarray(img.dataobj)
    affine = img.affine.copy()
    os.unlink(f.name)
    return arr, affine


def _bad_studies() -> dict[str, bytes]:
    """NIfTI payloads the bundle cannot serve, with a word its error message must contain."""
    good = gzip.compress(nib.Nifti1Image(np.ones((16, 16, 4), np.float32), np.eye(4)).to_bytes())
    nan = np.ones((16, 16, 4), np.float32)
    nan[3, 4, 1] = np.nan
    return {
        "4d": gzip.compress(nib.Nifti1Image(np.ones((16, 16, 4, 3), np.float32), np.eye(4)).to_bytes()),
        "nan": gzip.compress(nib.Nifti1Image(nan, np.eye(4)).to_bytes()),
        "truncated": good[: len(good) // 2],
        "corrupt": b"this is not a NIfTI file" * 20,
    }


BAD_WORDS = {"4d": "4D data", "nan": "1 NaN", "truncated": "cannot be read", "corrupt": "cannot be read"}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("ml_server")
    bundle = make_tiny_bundle(root / "bundle_src" / NAME, weights=False)
    write_weights(bundle, constant_head_state(network_state(bundle), seg_class=2, identity_restore=True))
    studies = root / "studies"
    study = write_study(studies, names=("img0", "img1"))
    # a broken study already in the datastore folder (copied there, never uploaded): /infer must name it
    (studies / "stored_truncated.nii.gz").write_bytes(_bad_studies()["truncated"])
    info = monailabel_app.prepare_app(root / "app", bundle_dir=bundle, name=NAME, copy=True)
    assert info["models"] == [NAME, RESTORE]
    model_pt = Path(info["model_dirs"][0]) / "models" / "model.pt"
    assert model_pt.is_file()

    port = _free_port()
    cmd = monailabel_app.server_command(info["app_dir"], studies, info["models"], host="127.0.0.1", port=port)
    cmd = [sys.executable, "-m", "monailabel.main", *cmd[1:]]  # the `monailabel` wrapper runs `python` from PATH
    # train.json's MLflow parameter logging references the demo datalist, which is then generated (cached) even when
    # MONAI Label supplies the data: keep it out of the repository
    env = dict(os.environ, VLDUN_DEMO_ROOT=str(root / "demo_data"), PYTHONUNBUFFERED="1")
    env.pop("PYTHONPATH", None)
    log_path = root / "server.log"
    url = f"http://127.0.0.1:{port}"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=root, env=env, start_new_session=True)
    try:
        t0 = time.time()
        while True:
            if proc.poll() is not None:
                pytest.fail(f"server exited with {proc.returncode}:\n{log_path.read_text()[-4000:]}")
            try:
                if requests.get(f"{url}/info/", timeout=5).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.time() - t0 > START_TIMEOUT:
                pytest.fail(f"server not up after {START_TIMEOUT}s:\n{log_path.read_text()[-4000:]}")
            time.sleep(1)
        yield {
            "url": url,
            "proc": proc,
            "log": log_path,
            "study": study,
            "model_pt": model_pt,
            "root": root,
            "startup_s": time.time() - t0,
        }
    finally:
        _stop(proc)


def _infer(server, model=NAME, output="image", **params):
    r = requests.post(f"{server['url']}/infer/{model}", params={"output": output, **params}, timeout=REQUEST_TIMEOUT)
    assert r.status_code == 200, f"{r.status_code} {r.text[:500]}\n{server['log'].read_text()[-3000:]}"
    return r


def test_info_lists_the_model_with_its_labels(server):
    info = requests.get(f"{server['url']}/info/", timeout=30).json()
    assert NAME in info["models"] and RESTORE in info["models"]
    model = info["models"][NAME]
    assert model["labels"] == LABELS
    assert model["type"] == "segmentation"
    meta = json.loads((ROOT / "bundle" / "configs" / "metadata.json").read_text())
    assert model["version"] == meta["version"]
    assert NAME in info["trainers"] and RESTORE not in info["trainers"]
    assert info["models"][RESTORE]["labels"] == {}


def test_infer_returns_the_segmentation_of_a_3d_nifti(server):
    case = server["study"]["img0"]
    seg, affine = _nifti(_infer(server, image="img0").content)
    assert seg.shape == case["image_array"].shape == (32, 32, 6)
    assert np.allclose(affine, case["affine"])
    assert set(np.unique(seg).tolist()) == {2}  # the starting weights put class 2 everywhere
    assert set(np.unique(seg).tolist()) <= set(LABELS.values()) | {0}


def test_infer_json_gives_the_restored_volume(server):
    case = server["study"]["img0"]
    params = _infer(server, image="img0", output="json").json()
    assert params["label_names"] == LABELS
    path = params["restored"]
    assert os.path.isfile(path)
    rest = nib.load(path)
    assert rest.shape == case["image_array"].shape and np.allclose(rest.affine, case["affine"])
    r = np.asarray(rest.dataobj, dtype=np.float32)
    raw = case["image_array"].astype(np.float32)
    lo, hi = np.percentile(raw, [0.5, 99.5])
    inside = (raw > lo + 1) & (raw < hi - 1)
    np.testing.assert_allclose(r[inside], raw[inside], atol=1e-3 * (hi - lo))  # identity restoration head


def test_restore_task_returns_the_restored_volume_as_image(server):
    case = server["study"]["img1"]
    served, affine = _nifti(_infer(server, model=RESTORE, image="img1").content)
    assert served.shape == case["image_array"].shape and np.allclose(affine, case["affine"])
    saved = np.asarray(nib.load(_infer(server, image="img1", output="json").json()["restored"]).dataobj)
    np.testing.assert_allclose(served.astype(np.float32), saved.astype(np.float32), rtol=1e-5, atol=1e-3)


def test_upload_a_study_then_infer_and_infer_on_an_uploaded_file(server, tmp_path):
    extra = write_study(tmp_path, names=("upl",), seed=7)["upl"]
    with open(extra["image"], "rb") as f:
        r = requests.put(
            f"{server['url']}/datastore/image",
            params={"image": "uploaded0"},
            files={"file": ("uploaded0.nii.gz", f)},
            timeout=60,
        )
    assert r.status_code == 200, r.text
    seg, _ = _nifti(_infer(server, image="uploaded0").content)
    assert seg.shape == extra["image_array"].shape and set(np.unique(seg).tolist()) == {2}
    with open(extra["image"], "rb") as f:
        r = requests.post(
            f"{server['url']}/infer/{NAME}",
            params={"output": "image"},
            files={"file": ("direct.nii.gz", f)},
            timeout=REQUEST_TIMEOUT,
        )
    assert r.status_code == 200, r.text[:500]
    seg2, _ = _nifti(r.content)
    np.testing.assert_array_equal(seg2, seg)


@pytest.mark.parametrize("kind", sorted(BAD_WORDS))
def test_upload_of_a_study_that_cannot_be_served_is_refused_with_the_reason(server, kind):
    image_id = f"bad_{kind}"
    r = requests.put(
        f"{server['url']}/datastore/image",
        params={"image": image_id},
        files={"file": (f"{image_id}.nii.gz", _bad_studies()[kind])},
        timeout=60,
    )
    assert r.status_code == 422, f"{r.status_code} {r.text[:500]}"
    detail = r.json()["detail"]
    assert f"study {image_id!r}" in detail and BAD_WORDS[kind] in detail and "nothing was stored" in detail, detail
    assert "/tmp" not in detail  # the server's temporary file name means nothing to the client
    ds = requests.get(f"{server['url']}/datastore/", params={"output": "all"}, timeout=30).json()
    assert image_id not in ds["objects"]


@pytest.mark.parametrize("kind", ["4d", "nan"])
def test_infer_on_a_posted_study_that_cannot_be_served_names_the_problem(server, kind):
    r = requests.post(
        f"{server['url']}/infer/{NAME}",
        params={"output": "image"},
        files={"file": (f"{kind}.nii.gz", _bad_studies()[kind])},
        timeout=REQUEST_TIMEOUT,
    )
    assert r.status_code == 422, f"{r.status_code} {r.text[:500]}"
    detail = r.json()["detail"]
    assert "the posted file" in detail and BAD_WORDS[kind] in detail and NAME in detail, detail


def test_infer_on_a_broken_stored_study_names_the_image(server):
    r = requests.post(
        f"{server['url']}/infer/{NAME}", params={"image": "stored_truncated", "output": "json"}, timeout=60
    )
    assert r.status_code == 422, f"{r.status_code} {r.text[:500]}"
    detail = r.json()["detail"]
    assert "image 'stored_truncated'" in detail and "cannot be read" in detail, detail


def test_infer_with_an_unknown_image_or_model_says_what_exists(server):
    r = requests.post(f"{server['url']}/infer/{NAME}", params={"image": "no_such_case", "output": "json"}, timeout=60)
    assert r.status_code == 404, f"{r.status_code} {r.text[:500]}"
    detail = r.json()["detail"]
    assert "no image 'no_such_case'" in detail and "img0" in detail and "PUT /datastore/image" in detail, detail
    r = requests.post(f"{server['url']}/infer/no_such_model", params={"image": "img0", "output": "json"}, timeout=60)
    assert r.status_code == 404, f"{r.status_code} {r.text[:500]}"
    detail = r.json()["detail"]
    assert "no model 'no_such_model'" in detail and NAME in detail and RESTORE in detail, detail


def test_five_sequential_and_three_concurrent_requests(server):
    first, _ = _nifti(_infer(server, image="img1").content)
    for _ in range(4):
        seg, _ = _nifti(_infer(server, image="img1").content)
        np.testing.assert_array_equal(seg, first)

    def one(image):
        r = requests.post(
            f"{server['url']}/infer/{NAME}", params={"image": image, "output": "image"}, timeout=REQUEST_TIMEOUT
        )
        return r.status_code, r.content

    with ThreadPoolExecutor(max_workers=3) as pool:
        results = list(pool.map(one, ["img0", "img1", "img1"]))
    for code, content in results:
        assert code == 200, content[:300]
        seg, _ = _nifti(content)
        assert seg.shape == first.shape and set(np.unique(seg).tolist()) <= set(LABELS.values()) | {0}
    np.testing.assert_array_equal(_nifti(results[2][1])[0], first)


def test_annotation_loop_infer_correct_train_infer(server, tmp_path):
    """infer -> save a corrected label -> /train (one short round) -> the next /infer uses the new checkpoint."""
    url, case = server["url"], server["study"]["img0"]
    seg0, _ = _nifti(_infer(server, image="img0").content)
    rest0 = np.asarray(nib.load(_infer(server, image="img0", output="json").json()["restored"]).dataobj).copy()
    view0, _ = _nifti(_infer(server, model=RESTORE, image="img0").content)

    # the annotator corrects the all-class-2 result: here, to the phantom's true label map
    corrected = case["label_array"].astype(np.uint8)
    assert not np.array_equal(corrected, seg0)
    payload = gzip.compress(nib.Nifti1Image(corrected, case["affine"]).to_bytes())
    r = requests.put(
        f"{url}/datastore/label",
        params={"image": "img0", "tag": "final"},
        files={"label": ("img0.nii.gz", payload)},
        timeout=60,
    )
    assert r.status_code == 200, r.text
    ds = requests.get(f"{url}/datastore/", params={"output": "all"}, timeout=30).json()
    assert "final" in ds["objects"]["img0"]["labels"]
    saved = Path(server["root"]) / "studies" / "labels" / "final" / "img0.nii.gz"
    np.testing.assert_array_equal(np.asarray(nib.load(saved).dataobj), corrected)

    before = server["model_pt"].stat().st_mtime_ns
    t0 = time.time()
    r = requests.post(
        f"{url}/train/{NAME}",
        params={"run_sync": "true"},
        json={"max_epochs": 1, "val_split": 0.2, "device": "cpu", "multi_gpu": False, "pretrained": True},
        timeout=REQUEST_TIMEOUT,
    )
    assert r.status_code == 200, f"{r.text[:500]}\n{server['log'].read_text()[-4000:]}"
    train_s = time.time() - t0
    assert server["model_pt"].stat().st_mtime_ns > before, (
        f"model.pt not rewritten\n{server['log'].read_text()[-4000:]}"
    )

    seg1, _ = _nifti(_infer(server, image="img0").content)
    rest1 = np.asarray(nib.load(_infer(server, image="img0", output="json").json()["restored"]).dataobj)
    view1, _ = _nifti(_infer(server, model=RESTORE, image="img0").content)
    assert seg1.shape == seg0.shape and set(np.unique(seg1).tolist()) <= {0, 1, 2, 3}
    assert np.abs(rest1.astype(np.float64) - rest0).max() > 1e-3, "the restored output did not change after training"
    assert np.abs(view1.astype(np.float64) - view0).max() > 1e-3, "the restore task still uses the old weights"
    print(f"server startup {server['startup_s']:.1f}s, /train {train_s:.1f}s")
