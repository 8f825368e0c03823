"""The repository's contract: the README's commands are what CI runs, and the bundle has the Model Zoo layout."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BUNDLE = ROOT / "bundle"
SCHEMA = ROOT.parent / "shared" / "schemas" / "meta_schema_20240725.json"


def _readme_commands() -> dict[str, str]:
    """Commands in the README's quick-start block, keyed by the comment line above each."""
    text = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- quickstart -->\s*```bash\n(.*?)```", text, re.S)
    assert block, "README.md lost its quick-start block (marked <!-- quickstart -->)"
    commands, key = {}, None
    for line in block.group(1).splitlines():
        if line.startswith("# "):
            key = line[2:].split(":")[0].strip().lower()
        elif line.strip():
            commands[key] = line.strip()
    return commands


def test_ci_runs_exactly_the_readme_install_and_test_commands():
    commands = _readme_commands()
    assert set(commands) >= {"install", "main job", "test"}, commands
    ci_lines = [ln.strip() for ln in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert commands["install"] in ci_lines
    assert commands["test"] in ci_lines
    assert "monai.bundle run training --config_file bundle/configs/train.json" in commands["main job"]


def test_bundle_layout():
    for rel in ["LICENSE", "configs/metadata.json", "configs/logging.conf", "docs/README.md", "scripts/__init__.py"]:
        assert (BUNDLE / rel).is_file(), f"bundle/{rel} is missing"
    assert "Apache License" in (BUNDLE / "LICENSE").read_text()
    assert (BUNDLE / "models").is_dir()


def test_requirements_are_pinned():
    for name in ["requirements.txt", "requirements-gpu.txt"]:
        for line in (ROOT / name).read_text().splitlines():
            line = line.split("#")[0].strip()
            if line:
                assert re.search(r"(==|<)", line), f"{name}: '{line}' is not pinned"
    assert "mamba" not in (ROOT / "requirements.txt").read_text().replace("mambapy", "")


@pytest.mark.skipif(not SCHEMA.is_file(), reason="the offline schema copy in ../shared/schemas is absent")
def test_metadata_validates_against_the_20240725_schema():
    cmd = [
        sys.executable,
        "-m",
        "monai.bundle",
        "verify_metadata",
        "--meta_file",
        str(BUNDLE / "configs" / "metadata.json"),
        "--filepath",
        str(SCHEMA),
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "metadata is verified with no error" in (result.stdout + result.stderr)


def test_metadata_describes_the_network_truthfully():
    meta = json.loads((BUNDLE / "configs" / "metadata.json").read_text())
    fmt = meta["network_data_format"]
    assert list(fmt["inputs"]) == ["image"] and fmt["inputs"]["image"]["num_channels"] == 1
    outputs = fmt["outputs"]
    assert list(outputs)[0] == "pred", "MONAI Label and verify_net_in_out read the first output, which must be pred"
    assert outputs["pred"]["format"] == "segmentation"
    assert len(outputs["pred"]["channel_def"]) == outputs["pred"]["num_channels"]
    assert outputs["restored"]["num_channels"] == 1
    assert meta["version"] in meta["changelog"]
