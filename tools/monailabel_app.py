"""Prepare a MONAI Label app folder that serves the VL-DUN bundle, and print the command that starts it.

    python tools/monailabel_app.py --app-dir apps/vldun [--bundle bundle] [--name vldun_mri_ct_segmentation]
        [--copy] [--no-restore-task] [--init-random-weights] [--studies DIR] [--host 127.0.0.1] [--port 8000]

What it does (no network access; MONAI Label 0.8.5):

1. copies the stock ``monaibundle`` sample app out of the installed ``monailabel`` wheel (the same folder
   ``monailabel apps --download --name monaibundle`` copies) into ``--app-dir`` (kept if it is already there),
   its ``main.py`` as ``monaibundle_main.py``, and writes ``tools/monailabel_main.py`` as the app's ``main.py``:
   the same app, answering bad uploads and failed ``/infer`` requests with a 4xx/5xx that names the image and the
   problem (MONAI Label itself answers HTTP 500 with no message), and training with the bundle's
   ``configs/monailabel.json`` merged over ``train.json`` (``tools/monailabel_train.py``, copied next to it);
2. places the bundle at ``<app>/model/<name>``: a symbolic link to ``--bundle`` by default (training from MONAI
   Label then updates ``bundle/models/model.pt`` in place), or a copy with ``--copy``. The folder name is the
   model name that MONAI Label shows and the one used in ``/infer/<name>`` and ``/train/<name>``;
3. unless ``--no-restore-task``: adds a second model folder ``<app>/model/<restore name>`` that serves the
   *restored image* as the result of ``/infer/<restore name>`` (option (c) of ``monai-conventions.md`` section 4).
   It holds ``configs/inference.json`` = the bundle's ``inference.json`` merged with
   ``inference_restore.json``, ``configs/metadata.json`` with the ``restored`` output first, and links to the
   bundle's ``scripts/`` and ``models/`` (so it always uses the current weights). It has no ``train.json``, so
   MONAI Label adds no trainer for it;
4. prints the ``monailabel start_server`` command with ``--conf models <names> --conf zoo_source local
   --conf sam2 false`` (without ``zoo_source`` the server first queries the online Model Zoo; without
   ``sam2 false`` it tries to set up SAM2).

MONAI Label only serves a bundle that has weights (``models/model.pt`` or ``models/model.ts``). Train first (the
main job writes ``bundle/models/model.pt``), download released weights once there are any (``python -m monai.bundle
download_large_files --bundle_path bundle``; none are published yet), or, for a smoke test of the plumbing only, pass
``--init-random-weights`` to write an untrained ``model.pt``.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_BUNDLE = ROOT / "bundle"
DEFAULT_NAME = "vldun_mri_ct_segmentation"
SAMPLE_APP = "monaibundle"
APP_MAIN = Path(__file__).resolve().with_name("monailabel_main.py")
#: modules of the app next to its main.py
APP_MODULES = (Path(__file__).resolve().with_name("monailabel_train.py"),)

#: what is never linked/copied from a bundle into an app (run outputs, caches)
BUNDLE_IGNORE = ("eval", "runs", ".cache", "mlruns", "__pycache__", "*.pyc", "monailabel_train.json")

__all__ = [
    "DEFAULT_NAME",
    "find_sample_app",
    "restore_task_name",
    "prepare_app",
    "server_command",
    "write_random_weights",
    "main",
]


def find_sample_app(name: str = SAMPLE_APP) -> Path:
    """Folder of a MONAI Label sample app shipped with the installed wheel (the places ``monailabel apps``
    searches: next to the package, then ``<sys.prefix>/monailabel``, ``<sys.prefix>/local/monailabel`` and
    ``~/.local/monailabel``)."""
    import monailabel

    pkg = Path(monailabel.__file__).resolve().parent
    candidates = [
        pkg.parent / "sample-apps" / name,
        Path(sys.prefix) / "monailabel" / "sample-apps" / name,
        Path(sys.prefix) / "local" / "monailabel" / "sample-apps" / name,
        Path.home() / ".local" / "monailabel" / "sample-apps" / name,
    ]
    for c in candidates:
        if (c / "main.py").is_file():
            return c
    raise FileNotFoundError(
        f"MONAI Label sample app {name!r} not found; looked in: " + ", ".join(str(c) for c in candidates)
    )


def restore_task_name(name: str) -> str:
    """Model name of the restored-image task: ``*segmentation*`` -> ``*restoration*``, else ``<name>_restoration``."""
    return name.replace("segmentation", "restoration") if "segmentation" in name else f"{name}_restoration"


def _replace(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)


def _link_or_copy(src: Path, dst: Path, copy: bool) -> None:
    _replace(dst)
    if copy:
        shutil.copytree(src, dst, ignore=shutil.ignore_patterns(*BUNDLE_IGNORE), symlinks=False)
    else:
        dst.symlink_to(src.resolve(), target_is_directory=True)


def write_random_weights(bundle_dir: str | os.PathLike, overrides: dict | None = None) -> Path:
    """Write ``<bundle>/models/model.pt`` = the plain ``state_dict`` of a freshly initialised ``network_def`` of
    ``configs/inference.json`` (untrained: for plumbing tests only). Written atomically."""
    from monai.bundle import ConfigParser

    bundle_dir = Path(bundle_dir).resolve()
    sys.path.insert(0, str(bundle_dir))
    try:
        from scripts.workflows.checkpoint import save_atomic

        parser = ConfigParser()
        parser.read_config(str(bundle_dir / "configs" / "inference.json"))
        parser["bundle_root"] = str(bundle_dir)
        for k, v in (overrides or {}).items():
            parser[k] = v
        net = parser.get_parsed_content("network_def", instantiate=True)
        state = {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}
        return save_atomic(state, bundle_dir / "models" / "model.pt")
    finally:
        sys.path.remove(str(bundle_dir))


def _restore_view(bundle_dir: Path, view_dir: Path, main_model_dir: Path) -> None:
    """Create the restored-image model folder (see the module docstring, step 3)."""
    from monai.bundle import ConfigParser

    configs = bundle_dir / "configs"
    if not (configs / "inference_restore.json").is_file():
        raise FileNotFoundError(f"{configs / 'inference_restore.json'} is missing; use --no-restore-task")
    _replace(view_dir)
    (view_dir / "configs").mkdir(parents=True)
    merged = ConfigParser.load_config_files([str(configs / "inference.json"), str(configs / "inference_restore.json")])
    ConfigParser.export_config_file(merged, str(view_dir / "configs" / "inference.json"), indent=4)
    meta = json.loads((configs / "metadata.json").read_text())
    outs = meta["network_data_format"]["outputs"]
    # MONAI Label serves the first output under the key "pred" (its Restored post-transform uses the first output's
    # key; its Writer writes "pred"): here that is the restored image. An image has no label names (channel_def).
    restored = {k: v for k, v in outs["restored"].items() if k != "channel_def"}
    others = {("segmentation" if k == "pred" else k): v for k, v in outs.items() if k != "restored"}
    meta["network_data_format"]["outputs"] = {"pred": restored, **others}
    meta["description"] = (
        "Restored image of "
        + meta.get("name", "VL-DUN")
        + " (served as the result image). "
        + meta.get("description", "")
    )
    (view_dir / "configs" / "metadata.json").write_text(json.dumps(meta, indent=4) + "\n")
    if (configs / "logging.conf").is_file():
        shutil.copy2(configs / "logging.conf", view_dir / "configs" / "logging.conf")
    # weights and code are shared with the main model folder, so retraining updates both tasks
    (view_dir / "models").symlink_to(os.path.relpath(main_model_dir / "models", view_dir), target_is_directory=True)
    (view_dir / "scripts").symlink_to(os.path.relpath(main_model_dir / "scripts", view_dir), target_is_directory=True)


def server_command(
    app_dir: str | os.PathLike,
    studies: str | os.PathLike,
    models: Sequence[str],
    host: str = "127.0.0.1",
    port: int = 8000,
    extra_conf: dict[str, str] | None = None,
) -> list[str]:
    """The ``monailabel start_server`` command line (a list) for an app prepared by :func:`prepare_app`."""
    cmd = ["monailabel", "start_server", "--app", str(app_dir), "--studies", str(studies)]
    cmd += ["--host", host, "--port", str(int(port))]
    conf = {"models": ",".join(models), "zoo_source": "local", "sam2": "false", **(extra_conf or {})}
    for k, v in conf.items():
        cmd += ["--conf", k, str(v)]
    return cmd


def prepare_app(
    app_dir: str | os.PathLike,
    bundle_dir: str | os.PathLike = DEFAULT_BUNDLE,
    name: str = DEFAULT_NAME,
    copy: bool = False,
    restore_task: bool = True,
    init_random_weights: bool = False,
    force: bool = False,
) -> dict:
    """Create (or update) a MONAI Label app folder serving the bundle. Returns ``{"app_dir", "models", "model_dirs",
    "weights"}`` (``models``: the model names for ``--conf models``; ``weights``: the weights file or ``None``).

    ``force`` replaces an existing app folder's copy of the sample app; the model folders are always refreshed.
    """
    app_dir = Path(app_dir).expanduser().resolve()
    bundle_dir = Path(bundle_dir).expanduser().resolve()
    for rel in ("configs/inference.json", "configs/metadata.json", "scripts/__init__.py"):
        if not (bundle_dir / rel).is_file():
            raise FileNotFoundError(f"{bundle_dir} is not a VL-DUN bundle: {rel} is missing")
    if not name or "/" in name or name.startswith("."):
        raise ValueError(f"invalid model name {name!r}")

    if force and app_dir.exists():
        shutil.rmtree(app_dir)
    sample = find_sample_app()
    if not (app_dir / "main.py").is_file():
        app_dir.parent.mkdir(parents=True, exist_ok=True)
        ignore = shutil.ignore_patterns("logs", "model", "__pycache__")
        shutil.copytree(sample, app_dir, ignore=ignore, dirs_exist_ok=True)
    shutil.copy2(sample / "main.py", app_dir / "monaibundle_main.py")
    shutil.copy2(APP_MAIN, app_dir / "main.py")
    for module in APP_MODULES:
        shutil.copy2(module, app_dir / module.name)
    model_root = app_dir / "model"
    model_root.mkdir(exist_ok=True)

    main_dir = model_root / name
    _link_or_copy(bundle_dir, main_dir, copy=copy)
    if init_random_weights and not any((main_dir / "models" / f).is_file() for f in ("model.pt", "model.ts")):
        write_random_weights(main_dir)  # never overwrites existing (trained) weights

    models, model_dirs = [name], [main_dir]
    if restore_task:
        rname = restore_task_name(name)
        _restore_view(main_dir.resolve(), model_root / rname, main_dir)
        models.append(rname)
        model_dirs.append(model_root / rname)

    weights = main_dir / "models" / "model.pt"
    if not weights.is_file():
        ts = main_dir / "models" / "model.ts"
        weights = ts if ts.is_file() else None
    return {"app_dir": app_dir, "models": models, "model_dirs": model_dirs, "weights": weights}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--app-dir", required=True, help="app folder to create/update (e.g. apps/vldun)")
    p.add_argument("--bundle", default=str(DEFAULT_BUNDLE), help="bundle folder (default: %(default)s)")
    p.add_argument("--name", default=DEFAULT_NAME, help="model name in MONAI Label (default: %(default)s)")
    p.add_argument("--copy", action="store_true", help="copy the bundle instead of linking it")
    p.add_argument("--no-restore-task", action="store_true", help="do not add the restored-image infer task")
    p.add_argument(
        "--init-random-weights",
        action="store_true",
        help="write an UNTRAINED models/model.pt when the bundle has no weights (plumbing tests only)",
    )
    p.add_argument("--force", action="store_true", help="recreate the app folder from the sample app")
    p.add_argument("--studies", default="datasets/studies", help="studies folder for the printed command")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    args = p.parse_args(argv)

    info = prepare_app(
        args.app_dir,
        bundle_dir=args.bundle,
        name=args.name,
        copy=args.copy,
        restore_task=not args.no_restore_task,
        init_random_weights=args.init_random_weights,
        force=args.force,
    )
    print(f"app folder: {info['app_dir']}")
    for d in info["model_dirs"]:
        target = f" -> {os.path.realpath(d)}" if Path(d).is_symlink() else ""
        print(f"model: {d}{target}")
    if info["weights"] is None:
        print(
            "WARNING: the bundle has no models/model.pt (or model.ts): MONAI Label will skip it. Train first "
            "(python -m monai.bundle run training --config_file bundle/configs/train.json), or pass "
            "--init-random-weights for an untrained smoke test.",
            file=sys.stderr,
        )
    cmd = server_command(info["app_dir"], args.studies, info["models"], args.host, args.port)
    print("start the server with (virtual environment active):")
    print("  " + " ".join(shlex.quote(c) for c in cmd))
    print("or, without activating it:")
    print("  " + " ".join(shlex.quote(c) for c in [sys.executable, "-m", "monailabel.main", *cmd[1:]]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
