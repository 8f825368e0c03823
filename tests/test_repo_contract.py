"""The repository's contract: the README's commands are what CI runs, the documented Model Zoo commands run as
written (offline), and the bundle has the Model Zoo layout."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BUNDLE = ROOT / "bundle"
SCHEMA = ROOT / "tools" / "schemas" / "meta_schema_20240725.json"
SHARED_SCHEMA = ROOT.parent / "shared" / "schemas" / "meta_schema_20240725.json"
DOCS = [ROOT / "README.md", *sorted((BUNDLE / "docs").glob("*.md")), SCHEMA.parent / "README.md"]

#: documented ``monai.bundle`` sub-commands the docs test does not run, with the reason. Every other documented
#: ``python -m monai.bundle <sub-command>`` runs as written, so a newly documented one is tested by default.
NOT_RUN = {
    "run": "a whole workflow (training, evaluation, inference): minutes of CPU and user data or trained weights; "
    "tests/test_e2e_workflows.py runs each workflow from the repository root on tiny data",
}


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


def test_shipped_schema_is_the_model_zoo_one_named_by_the_metadata():
    meta = json.loads((BUNDLE / "configs" / "metadata.json").read_text())
    assert meta["schema"].endswith("/" + SCHEMA.name), "metadata.json names another schema than the one shipped"
    assert "Apache-2.0" in (SCHEMA.parent / "README.md").read_text()
    if SHARED_SCHEMA.is_file():  # the copy the schema was taken from, where this machine has it
        assert json.loads(SCHEMA.read_text()) == json.loads(SHARED_SCHEMA.read_text())


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
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600)
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


@dataclass(frozen=True)
class DocCommand:
    doc: Path
    line: int
    cwd: Path
    command: str
    sub: str

    def __str__(self) -> str:
        return f"{self.doc.relative_to(ROOT)}:{self.line}:{self.sub}"


_BUNDLE_CLI = re.compile(r"^(?:\.\./)*(?:\.venv/bin/)?python3?\s+-m\s+monai\.bundle\s+(\S+)")


def _documented_bundle_commands() -> list[DocCommand]:
    """Every ``python -m monai.bundle ...`` (or ``.venv/bin/python -m monai.bundle``) command of a fenced code block
    in the README and bundle/docs, with the folder it runs in: the repository root (where the docs say commands
    run), changed by ``cd DIR`` earlier in the same block."""
    out = []
    for doc in DOCS:
        lines = doc.read_text().splitlines()
        in_block, cwd, pending, start = False, ROOT, "", 0
        for i, raw in enumerate(lines, 1):
            line = raw.strip()
            if line.startswith("```"):
                in_block, cwd, pending = not in_block, ROOT, ""
                continue
            if not in_block:
                continue
            if not pending:
                start = i
            if line.endswith("\\"):
                pending += line[:-1] + " "
                continue
            logical, pending = pending + line, ""
            for part in logical.split("&&"):
                part = part.strip()
                if part.startswith("cd "):
                    cwd = (cwd / part[3:].strip()).resolve()
                elif m := _BUNDLE_CLI.match(part):
                    out.append(DocCommand(doc, start, cwd, part, m.group(1)))
    return out


DOC_COMMANDS = _documented_bundle_commands()
TO_RUN = [c for c in DOC_COMMANDS if c.sub not in NOT_RUN]


def test_the_documented_model_zoo_commands_are_found():
    subs = {c.sub for c in DOC_COMMANDS}
    assert {"run", "verify_metadata", "verify_net_in_out", "download_large_files"} <= subs, subs
    assert {c.sub for c in TO_RUN} >= {"verify_metadata", "verify_net_in_out", "download_large_files"}


@pytest.mark.slow
@pytest.mark.parametrize("cmd", TO_RUN, ids=str)
def test_documented_model_zoo_command_runs_as_written_offline(cmd):
    """The command as the docs write it, in the folder they say, with the network closed: any download attempt
    goes to a proxy that refuses connections."""
    shell = _BUNDLE_CLI.sub(lambda m: f"{shlex.quote(sys.executable)} -m monai.bundle {m.group(1)}", cmd.command)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH" and not k.lower().endswith("_proxy")}
    env.update({k: "http://127.0.0.1:9" for k in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY")})
    res = subprocess.run(["bash", "-c", shell], cwd=cmd.cwd, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, f"{cmd} in {cmd.cwd}: {cmd.command}\n" + (res.stdout + res.stderr)[-4000:]
