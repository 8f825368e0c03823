"""Build the distributable VL-DUN bundle archive and check it.

    python tools/package_bundle.py [--bundle bundle] [--name vldun_mri_ct_segmentation] [--output dist]
        [--no-weights] [--allow-unrecorded-weights] [--no-check] [--update-large-files] [--url-pattern URL]
        [--check-timeout 600]

0. **Weights provenance** (unless ``--no-weights``): ``models/model.pt`` must match its record ``models/model.pt.json``
   (written with every saved ``model.pt`` by the bundle's training, MONAI Label's ``/train`` included; see
   ``scripts/workflows/checkpoint.py``): same SHA-256. A missing or unreadable record, one without a hash, or one
   of other weights (the weights were replaced or copied in afterwards) stops the packager with exit status 1 and
   a message naming both files; ``--allow-unrecorded-weights`` packages such weights with a warning.

1. **Build** ``<output>/<name>_v<version>.zip`` (``version`` from ``configs/metadata.json``; the Model Zoo's
   release naming). The archive holds one top-level folder ``<name>/`` with only what a bundle carries:
   ``LICENSE``, ``large_files.yml``, ``configs/`` (``*.json``, ``*.yaml``, ``logging.conf``), ``docs/`` (markdown,
   text, images), ``scripts/`` (the Python package and its data files, e.g. the open_clip configs) and, unless
   ``--no-weights``, ``models/model.pt`` (and ``models/model.ts`` when present). Never: caches, run outputs
   (``eval/``, ``runs/``, ``.cache/``, ``mlruns``), ``__pycache__``, training state (``checkpoint_latest.pt``), the
   ``model.pt.json`` record, MONAI Label's generated ``monailabel_train.json``, hidden or temporary files. Entries are
   written in sorted order with a fixed timestamp, so the same inputs give the same archive bytes.
2. **Weights record**: computes the MD5 of ``models/model.pt`` and writes it (``hash_val``) into the archive's
   ``large_files.yml``, with the release URL pattern filled in for this version, and copies the weights next to the
   archive as ``<name>_v<version>_model.pt`` (the release asset that URL names). No weights are hosted anywhere yet,
   so the default URL is that asset as a relative ``file:`` URL (``download_large_files`` run from the archive's
   folder restores or checks the weights); ``--url-pattern`` sets a hosted one. ``--update-large-files`` also
   writes the record into the bundle's own ``large_files.yml``. A ``<archive>.md5`` file holds the archive's MD5.
3. **Check** (unless ``--no-check``), in a fresh Python process whose working directory is an empty temporary folder
   the archive is unpacked into (so nothing of the repository can be imported by accident):
   ``monai.bundle.load(<name>, bundle_dir=..., workflow_type="inference")`` builds ``network_def`` and loads the
   weights with ``weights_only=True``; then a ``ConfigWorkflow`` of ``configs/inference.json`` runs on a synthetic
   3D volume and the written segmentation and restored image are checked (shape, label values, finite values).
   Without weights in the archive, the check writes an *untrained* ``model.pt`` into the unpacked copy first (the
   archive is not changed) and says so.

4. **Export** (``--export-shape H W``): ``torch.export`` writes the segmentation network to
   ``<output>/<name>_v<version>_seg.pt2`` for inputs (1, 1, H, W) with H and W any multiple of 8 within
   ``--export-size-range`` (traced at the given shape) and compares it with the eager network at that shape and at
   ``--export-check-shape``. TorchScript is not possible for this network (see ``docs/README.md``).

Exit status 0 when the archive was built and (if requested) passed the check. Prints one JSON summary line last.
"""

from __future__ import annotations

import argparse
import fnmatch
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
import zipfile
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_BUNDLE = ROOT / "bundle"
DEFAULT_NAME = "vldun_mri_ct_segmentation"

#: where the archive's large_files.yml says the weights are ({name} and {version} are filled in): by default the
#: release asset written next to the archive, as a relative file: URL, since no weights are hosted anywhere yet (a
#: made-up https URL would only fail); --url-pattern sets the host's URL for a published release.
RELEASE_URL_PATTERN = "file:{name}_v{version}_model.pt"
WEIGHTS_RECORD = "models/model.pt.json"

#: (folder or file relative to the bundle, file name patterns included below it)
INCLUDE: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("LICENSE", ("LICENSE",)),
    ("large_files.yml", ("large_files.yml",)),
    ("configs", ("*.json", "*.yaml", "*.yml", "logging.conf")),
    ("docs", ("*.md", "*.txt", "*.png", "*.jpg", "*.jpeg", "*.svg", "*.gif")),
    ("scripts", ("*.py", "*.json", "*.yaml", "*.yml", "*.txt", "*.md")),
)
WEIGHTS = ("models/model.pt", "models/model.ts")
#: never packaged, wherever they are
EXCLUDE = ("__pycache__", "*.pyc", ".*", "*.tmp", "monailabel_train.json", "eval", "runs", ".cache", "mlruns")

#: fixed timestamp of every archive entry (reproducible archives)
ZIP_DATE = (2026, 1, 1, 0, 0, 0)

__all__ = [
    "bundle_files",
    "md5sum",
    "sha256sum",
    "UnrecordedWeightsError",
    "weights_provenance",
    "large_files_yaml",
    "build_archive",
    "check_archive",
    "export_program",
    "main",
]


class UnrecordedWeightsError(RuntimeError):
    """``models/model.pt`` has no provenance record that describes it (see :func:`weights_provenance`)."""


def _filehash(path: str | os.PathLike, h, chunk: int = 1 << 20) -> str:
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def md5sum(path: str | os.PathLike) -> str:
    return _filehash(path, hashlib.md5(usedforsecurity=False))


def sha256sum(path: str | os.PathLike) -> str:
    return _filehash(path, hashlib.sha256())


def weights_provenance(bundle_dir: str | os.PathLike) -> tuple[dict | None, str | None]:
    """``(record, problem)`` for ``models/model.pt``: the parsed ``models/model.pt.json`` (or ``None``) and what is
    wrong with it as the weights' record (``None`` when its ``sha256`` is the weights')."""
    bundle_dir = Path(bundle_dir)
    weights, path = bundle_dir / "models" / "model.pt", bundle_dir / WEIGHTS_RECORD
    if not path.is_file():
        return None, f"{weights} has no provenance record: {path} is missing"
    try:
        record = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        return None, f"{weights}'s provenance record {path} is not JSON ({e})"
    if not isinstance(record, dict) or not record.get("sha256"):
        return None, (
            f"{weights}'s provenance record {path} holds no sha256 of the weights (written before records had one), "
            "so nothing says these are the weights it describes"
        )
    actual = sha256sum(weights)
    if record["sha256"] != actual:
        details = ("metric", "value", "epoch", "saved_by")
        run = ", ".join(f"{k} {record[k]}" for k in details if record.get(k) is not None)
        return record, (
            f"{weights} does not match its provenance record {path}: the record is of weights with sha256 "
            f"{record['sha256']} ({run or 'no run details'}), the file's sha256 is {actual}. The weights were replaced "
            "after the record was written (by a tool that does not write the record, or copied in)"
        )
    return record, None


def _excluded(rel: Path) -> bool:
    return any(fnmatch.fnmatch(part, pat) for part in rel.parts for pat in EXCLUDE)


def bundle_files(bundle_dir: str | os.PathLike, weights: bool = True) -> list[str]:
    """Relative paths (POSIX, sorted) of the files the distributable bundle carries (see the module docstring)."""
    bundle_dir = Path(bundle_dir)
    out: set[str] = set()
    for top, patterns in INCLUDE:
        base = bundle_dir / top
        if base.is_file():
            out.add(top)
            continue
        if not base.is_dir():
            continue
        for p in base.rglob("*"):
            rel = p.relative_to(bundle_dir)
            if p.is_file() and not _excluded(rel) and any(fnmatch.fnmatch(p.name, pat) for pat in patterns):
                out.add(rel.as_posix())
    if weights:
        out.update(w for w in WEIGHTS if (bundle_dir / w).is_file())
    for required in ("LICENSE", "configs/metadata.json", "configs/inference.json", "scripts/__init__.py"):
        if required not in out:
            raise FileNotFoundError(f"{bundle_dir / required} is missing: not a complete bundle")
    return sorted(out)


def large_files_yaml(name: str, version: str, md5: str | None, url_pattern: str = RELEASE_URL_PATTERN) -> str:
    """``large_files.yml`` text (the format ``python -m monai.bundle download_large_files`` reads). Without weights
    (``md5`` None) it lists none: there is nothing to download, and the command then succeeds doing nothing."""
    if not md5:
        return (
            "# Weights of the VL-DUN bundle (models/model.pt, not in git). No weights are published yet, so none are\n"
            "# listed and `python -m monai.bundle download_large_files` has nothing to fetch: train the bundle\n"
            "# (docs/README.md) or copy a weights file to models/model.pt. tools/package_bundle.py writes the entry\n"
            "# (url and md5) of the weights it packages into the archive's copy of this file.\n"
            "large_files: []\n"
        )
    url = url_pattern.format(name=name, version=version)
    where = (
        f"# url: the release asset tools/package_bundle.py writes next to {name}_v{version}.zip. A relative\n"
        "# file: URL resolves against the working directory: run download_large_files from the asset's folder.\n"
        if url.startswith("file:") and not url.startswith("file:/")
        else "# url: where the release hosts the weights.\n"
    )
    return (
        "# Weights of the VL-DUN bundle. `python -m monai.bundle download_large_files --bundle_path <this folder>`\n"
        "# checks models/model.pt against hash_val and fetches it from url when it is missing.\n"
        f"# hash_val: md5 of the weights packaged in {name}_v{version}.zip, written by tools/package_bundle.py.\n"
        f"{where}"
        "large_files:\n"
        '  - path: "models/model.pt"\n'
        f'    url: "{url}"\n'
        f'    hash_val: "{md5}"\n'
        '    hash_type: "md5"\n'
    )


def _zip_write(zf: zipfile.ZipFile, arcname: str, data: bytes) -> None:
    info = zipfile.ZipInfo(arcname, date_time=ZIP_DATE)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = 0o644 << 16
    zf.writestr(info, data)


def build_archive(
    bundle_dir: str | os.PathLike = DEFAULT_BUNDLE,
    output_dir: str | os.PathLike = ROOT / "dist",
    name: str = DEFAULT_NAME,
    weights: bool = True,
    url_pattern: str = RELEASE_URL_PATTERN,
    update_large_files: bool = False,
    allow_unrecorded_weights: bool = False,
) -> dict:
    """Write ``<output_dir>/<name>_v<version>.zip``; returns ``{"archive", "version", "files", "weights_md5",
    "weights_asset", "archive_md5", "weights_record", "weights_unrecorded"}``. Raises
    :class:`UnrecordedWeightsError` before writing anything when the weights do not match their provenance record,
    unless ``allow_unrecorded_weights`` (then ``weights_unrecorded`` says what is wrong)."""
    bundle_dir = Path(bundle_dir).resolve()
    meta = json.loads((bundle_dir / "configs" / "metadata.json").read_text())
    version = str(meta["version"])
    changelog = meta.get("changelog", {})
    if version not in changelog:
        raise ValueError(f"metadata.json: version {version} has no changelog entry (Model Zoo rule)")
    files = bundle_files(bundle_dir, weights=weights)
    record = problem = None
    if "models/model.pt" in files:
        record, problem = weights_provenance(bundle_dir)
        if problem and not allow_unrecorded_weights:
            raise UnrecordedWeightsError(
                f"refusing to package: {problem}. Train with the bundle's workflows (they write the record with the "
                "weights), or pass --allow-unrecorded-weights to package these weights anyway."
            )
    wmd5 = md5sum(bundle_dir / "models" / "model.pt") if "models/model.pt" in files else None
    lf_text = large_files_yaml(name, version, wmd5, url_pattern)
    if update_large_files:
        (bundle_dir / "large_files.yml").write_text(lf_text)
    if "large_files.yml" not in files:
        files = sorted([*files, "large_files.yml"])

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    archive = output_dir / f"{name}_v{version}.zip"
    tmp = archive.with_name(f".{archive.name}.tmp")
    with zipfile.ZipFile(tmp, "w") as zf:
        for rel in files:
            data = lf_text.encode() if rel == "large_files.yml" else (bundle_dir / rel).read_bytes()
            _zip_write(zf, f"{name}/{rel}", data)
    os.replace(tmp, archive)
    amd5 = md5sum(archive)
    archive.with_name(archive.name + ".md5").write_text(f"{amd5}  {archive.name}\n")
    asset = None
    if wmd5:  # the weights as the separate release asset large_files.yml points to
        asset = output_dir / f"{name}_v{version}_model.pt"
        shutil.copyfile(bundle_dir / "models" / "model.pt", asset)
    return {
        "archive": archive,
        "version": version,
        "files": files,
        "weights_md5": wmd5,
        "weights_asset": asset,
        "archive_md5": amd5,
        "weights_record": record if problem is None else None,
        "weights_unrecorded": problem,
    }


# The check runs in a fresh interpreter (cwd = the unpacked folder), so it only sees the unpacked bundle's `scripts`.
_CHECK_SCRIPT = textwrap.dedent(
    r"""
    import json, os, sys, glob
    import numpy as np
    import nibabel as nib
    import torch

    name, root, random_weights = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
    bundle = os.path.join(root, name)
    sys.path.insert(0, bundle)
    report = {}
    meta = json.load(open(os.path.join(bundle, "configs", "metadata.json")))
    n_classes = int(meta["network_data_format"]["outputs"]["pred"]["num_channels"])

    import scripts
    assert os.path.realpath(scripts.__file__).startswith(os.path.realpath(bundle)), scripts.__file__
    if random_weights:
        from monai.bundle import ConfigParser
        from scripts.workflows.checkpoint import save_atomic
        p = ConfigParser(); p.read_config(os.path.join(bundle, "configs", "inference.json")); p["bundle_root"] = bundle
        net = p.get_parsed_content("network_def", instantiate=True)
        save_atomic({k: v.detach().cpu().clone() for k, v in net.state_dict().items()},
                    os.path.join(bundle, "models", "model.pt"))
        report["untrained_weights_written"] = True

    # synthetic 3D volume (MRI-like scanner units), written as NIfTI
    in_dir, out_dir = os.path.join(root, "_input"), os.path.join(root, "_output")
    os.makedirs(in_dir); os.makedirs(out_dir)
    rng = np.random.default_rng(0)
    xx, yy = np.meshgrid(np.linspace(-1, 1, 48), np.linspace(-1, 1, 40), indexing="ij")
    disk = ((xx / 0.6) ** 2 + (yy / 0.5) ** 2 < 1).astype(np.float32)
    vol = np.stack([300 * disk + 100 * (xx ** 2 + yy ** 2 < 0.1) + rng.normal(0, 5, disk.shape) for _ in range(5)], -1)
    vol = np.abs(vol).astype(np.int16)
    aff = np.diag([1.5, 1.5, 5.0, 1.0])
    nib.save(nib.Nifti1Image(vol, aff), os.path.join(in_dir, "case0.nii.gz"))
    overrides = json.loads(sys.argv[4])
    overrides = {k: v.replace("{in_dir}", in_dir).replace("{out_dir}", out_dir) if isinstance(v, str) else v
                 for k, v in overrides.items()}
    args_file = os.path.join(root, "_load_args.json")
    json.dump(overrides, open(args_file, "w"))

    from monai.bundle import ConfigWorkflow, load
    state = torch.load(os.path.join(bundle, "models", "model.pt"), map_location="cpu", weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values()), "model.pt is not a plain state_dict"
    net = load(name, bundle_dir=root, workflow_type="inference", device="cpu", source="github", args_file=args_file)
    assert isinstance(net, torch.nn.Module), type(net)
    ref = dict(net.state_dict())
    assert set(ref) == set(state), "the network's keys differ from model.pt's"
    assert all(torch.equal(ref[k].cpu(), state[k]) for k in state), "load() did not load the packaged weights"
    report["monai_bundle_load"] = type(net).__name__

    wf = ConfigWorkflow(
        config_file=os.path.join(bundle, "configs", "inference.json"),
        meta_file=os.path.join(bundle, "configs", "metadata.json"),
        logging_file=os.path.join(bundle, "configs", "logging.conf")
        if os.path.isfile(os.path.join(bundle, "configs", "logging.conf")) else None,
        workflow_type="inference",
        bundle_root=bundle,
        **overrides,
    )
    wf.initialize()
    missing = wf.check_properties()
    assert not missing, f"inference.json lacks required properties: {missing}"
    wf.run()
    wf.finalize()
    outs = sorted(glob.glob(os.path.join(out_dir, "**", "*.nii*"), recursive=True))
    assert outs, f"inference wrote nothing to {out_dir}"
    segs = [o for o in outs if "restored" not in os.path.basename(o)]
    rest = [o for o in outs if "restored" in os.path.basename(o)]
    assert segs and rest, f"expected a segmentation and a restored image, got {outs}"
    seg = np.asarray(nib.load(segs[0]).dataobj)
    img = np.asarray(nib.load(rest[0]).dataobj)
    assert seg.squeeze().shape == vol.shape, (seg.shape, vol.shape)
    assert img.squeeze().shape == vol.shape, (img.shape, vol.shape)
    labels = np.unique(seg)
    assert set(labels.tolist()) <= set(range(n_classes)), labels
    assert np.isfinite(img).all()
    report.update({"outputs": [os.path.relpath(o, root) for o in outs], "seg_shape": list(seg.shape),
                   "labels": [int(v) for v in labels], "restored_range": [float(img.min()), float(img.max())]})
    print("CHECK_REPORT " + json.dumps(report))
    """
)

#: config overrides for the check's inference run ({in_dir}/{out_dir} are filled in)
CHECK_OVERRIDES = {"input_dir": "{in_dir}", "output_dir": "{out_dir}"}


def check_archive(archive: str | os.PathLike, name: str | None = None, timeout: int = 600) -> dict:
    """Unpack ``archive`` into an empty temporary folder and check it there (see the module docstring, step 3).
    Returns the check's report; raises ``RuntimeError`` with the check's output when it fails."""
    archive = Path(archive).resolve()
    with zipfile.ZipFile(archive) as zf:
        tops = {n.split("/")[0] for n in zf.namelist()}
        if len(tops) != 1:
            raise RuntimeError(f"{archive.name}: expected one top-level folder, found {sorted(tops)}")
        top = tops.pop()
        if name and top != name:
            raise RuntimeError(f"{archive.name}: top-level folder is {top!r}, expected {name!r}")
        has_weights = f"{top}/models/model.pt" in zf.namelist()
        with tempfile.TemporaryDirectory(prefix="vldun_pkg_check_") as tmp:
            zf.extractall(tmp)
            os.makedirs(os.path.join(tmp, top, "models"), exist_ok=True)
            env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
            env.setdefault("OMP_NUM_THREADS", "2")
            cmd = [
                sys.executable,
                "-c",
                _CHECK_SCRIPT,
                top,
                tmp,
                "0" if has_weights else "1",
                json.dumps(CHECK_OVERRIDES),
            ]
            t0 = time.time()
            cwd = os.path.join(tmp, top)  # relative paths of the configs resolve inside the unpacked bundle
            res = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
            out = res.stdout + res.stderr
            if res.returncode != 0:
                raise RuntimeError(f"bundle check failed (exit {res.returncode}):\n{out[-6000:]}")
            line = [ln for ln in res.stdout.splitlines() if ln.startswith("CHECK_REPORT ")]
            report = json.loads(line[-1][len("CHECK_REPORT ") :]) if line else {}
            report["seconds"] = round(time.time() - t0, 1)
            report["weights_in_archive"] = has_weights
            return report


# torch.export of the segmentation network with a symbolic H x W (multiples of 8, the network's padding unit)
_EXPORT_SCRIPT = textwrap.dedent(
    r"""
    import json, os, sys, time
    import torch

    bundle, out = sys.argv[1], sys.argv[2]
    (h, w), (h2, w2), (lo, hi) = (tuple(int(v) for v in a.split("x")) for a in sys.argv[3:6])
    sys.path.insert(0, bundle)
    from monai.bundle import ConfigParser

    p = ConfigParser(); p.read_config(os.path.join(bundle, "configs", "inference.json")); p["bundle_root"] = bundle
    p["network_def#output"] = "seg"
    net = p.get_parsed_content("network_def", instantiate=True)
    state = torch.load(os.path.join(bundle, "models", "model.pt"), map_location="cpu", weights_only=True)
    net.load_state_dict(state)
    net.eval()
    for prm in net.parameters():
        prm.requires_grad_(False)
    m = net.pad_multiple
    hs = torch.export.Dim("h_blocks", min=lo // m, max=hi // m)
    ws = torch.export.Dim("w_blocks", min=lo // m, max=hi // m)
    x = torch.rand(1, 1, h, w, generator=torch.Generator().manual_seed(0))
    t0 = time.time()
    with torch.no_grad():
        ep = torch.export.export(net, (x,), dynamic_shapes={"x": {2: m * hs, 3: m * ws}}, strict=False)
    for gm in ep.graph_module.modules():  # source locations of every traced op: half the file, not needed to run it
        if isinstance(gm, torch.fx.GraphModule):
            for node in gm.graph.nodes:
                node.meta.pop("stack_trace", None)
    torch.export.save(ep, out)
    seconds = time.time() - t0
    program = torch.export.load(out).module()
    diffs = {}
    for hh, ww in ((h, w), (h2, w2)):
        xx = torch.rand(1, 1, hh, ww, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            y, y_ref = program(xx), net(xx)
        diffs[f"{hh}x{ww}"] = float((y - y_ref).abs().max())
    report = {"path": out, "example_shape": [1, 1, h, w], "output_shape": list(y.shape),
              "size_range": [lo, hi], "multiple": m, "max_abs_diff": diffs,
              "file_bytes": os.path.getsize(out),
              "weights_bytes": sum(v.numel() * v.element_size() for v in state.values()),
              "export_seconds": round(seconds, 1)}
    print("EXPORT_REPORT " + json.dumps(report))
    """
)

#: slice sizes an exported program accepts by default (multiples of 8; a latent of 2 x 2 or less specialises)
EXPORT_SIZE_RANGE = (24, 1024)


def export_program(
    bundle_dir: str | os.PathLike,
    out: str | os.PathLike,
    shape: Sequence[int] = (64, 64),
    check_shape: Sequence[int] = (40, 72),
    size_range: Sequence[int] = EXPORT_SIZE_RANGE,
    timeout: int = 3600,
) -> dict:
    """``torch.export`` the segmentation network (``network_def`` with ``output="seg"`` and ``models/model.pt``) to
    ``out`` (``.pt2``; load with ``torch.export.load(out).module()``) for inputs (1, 1, H, W) with H and W any
    multiple of 8 within ``size_range``, traced at ``shape``. Runs in a fresh process; the report gives the file and
    weights sizes and the largest difference to the eager network at ``shape`` and at ``check_shape``."""
    bundle_dir = Path(bundle_dir).resolve()
    if not (bundle_dir / "models" / "model.pt").is_file():
        raise FileNotFoundError(f"{bundle_dir / 'models' / 'model.pt'} is missing: nothing to export")
    sizes = [f"{int(a)}x{int(b)}" for a, b in (shape, check_shape, size_range)]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    cmd = [sys.executable, "-c", _EXPORT_SCRIPT, str(bundle_dir), str(Path(out).resolve()), *sizes]
    res = subprocess.run(cmd, cwd=bundle_dir, env=env, capture_output=True, text=True, timeout=timeout)
    if res.returncode != 0:
        raise RuntimeError(f"torch.export failed (exit {res.returncode}):\n{(res.stdout + res.stderr)[-6000:]}")
    line = [ln for ln in res.stdout.splitlines() if ln.startswith("EXPORT_REPORT ")][-1]
    return json.loads(line[len("EXPORT_REPORT ") :])


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--bundle", default=str(DEFAULT_BUNDLE), help="bundle folder (default: %(default)s)")
    p.add_argument("--name", default=DEFAULT_NAME, help="bundle name = archive's top folder (default: %(default)s)")
    p.add_argument("--output", default=str(ROOT / "dist"), help="output folder (default: %(default)s)")
    p.add_argument("--no-weights", action="store_true", help="do not package models/model.pt")
    p.add_argument(
        "--allow-unrecorded-weights",
        action="store_true",
        help="package models/model.pt even when models/model.pt.json does not record it (with a warning)",
    )
    p.add_argument("--no-check", action="store_true", help="skip the unpack-load-infer check")
    p.add_argument("--update-large-files", action="store_true", help="also write the md5 into bundle/large_files.yml")
    p.add_argument("--url-pattern", default=RELEASE_URL_PATTERN, help="release URL of the weights ({name}, {version})")
    p.add_argument("--check-timeout", type=int, default=600)
    p.add_argument(
        "--export-shape",
        type=int,
        nargs=2,
        metavar=("H", "W"),
        help="also torch.export the segmentation network, traced at (1, 1, H, W), for any H and W that are "
        "multiples of 8 within --export-size-range (<name>_v<version>_seg.pt2)",
    )
    p.add_argument(
        "--export-check-shape",
        type=int,
        nargs=2,
        metavar=("H", "W"),
        default=[40, 72],
        help="second input shape the exported program is compared with the network at (default: 40 72)",
    )
    p.add_argument(
        "--export-size-range",
        type=int,
        nargs=2,
        metavar=("MIN", "MAX"),
        default=list(EXPORT_SIZE_RANGE),
        help="smallest and largest H and W the exported program accepts (default: %(default)s)",
    )
    args = p.parse_args(argv)

    try:
        info = build_archive(
            args.bundle,
            args.output,
            name=args.name,
            weights=not args.no_weights,
            url_pattern=args.url_pattern,
            update_large_files=args.update_large_files,
            allow_unrecorded_weights=args.allow_unrecorded_weights,
        )
    except UnrecordedWeightsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if info["weights_unrecorded"]:
        print(f"WARNING: packaged anyway (--allow-unrecorded-weights): {info['weights_unrecorded']}", file=sys.stderr)
    print(f"wrote {info['archive']} ({len(info['files'])} files, md5 {info['archive_md5']})")
    for f in info["files"]:
        print(f"  {args.name}/{f}")
    if info["weights_md5"] is None:
        print("note: no models/model.pt packaged (train first, or this is a code-only archive)", file=sys.stderr)
    summary = {k: str(v) if isinstance(v, Path) else v for k, v in info.items() if k != "files"}
    summary["num_files"] = len(info["files"])
    if not args.no_check:
        try:
            summary["check"] = check_archive(info["archive"], args.name, timeout=args.check_timeout)
        except (RuntimeError, subprocess.TimeoutExpired) as e:
            print(str(e), file=sys.stderr)
            summary["check"] = "FAILED"
            print(json.dumps(summary))
            return 1
    if args.export_shape:
        out = Path(args.output) / f"{args.name}_v{info['version']}_seg.pt2"
        summary["export"] = export_program(
            args.bundle, out, args.export_shape, args.export_check_shape, args.export_size_range
        )
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
