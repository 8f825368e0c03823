"""Boolean knobs given as strings on the bundle command line (`--resume false` arrives as the string "false")."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from fire import parser as fire_parser
from monai.bundle import ConfigParser

from scripts.flags import as_bool, as_optional_float
from scripts.networks import VLDUN
from scripts.workflows.checkpoint import BestModelSaver, ResumeHandler

pytestmark = pytest.mark.usefixtures("one_thread")
CONFIGS = Path(__file__).resolve().parents[1] / "bundle" / "configs"


def test_the_cli_really_passes_lower_case_booleans_as_strings():
    # the premise of scripts.flags: python-fire (behind `python -m monai.bundle run`) keeps "false" a string
    assert fire_parser.DefaultParseValue("false") == "false" and bool("false")


@pytest.mark.parametrize("value", [True, "true", "True", " TRUE ", "yes", "on", "1", 1])
def test_true_spellings(value):
    assert as_bool(value) is True


@pytest.mark.parametrize("value", [False, "false", "False", "no", "off", "0", 0, None, ""])
def test_false_spellings(value):
    assert as_bool(value) is False


@pytest.mark.parametrize("value", ["treu", 2, "enabled", [True]])
def test_anything_else_is_an_error_naming_the_knob(value):
    with pytest.raises(ValueError, match="resume must be a boolean"):
        as_bool(value, "resume")


@pytest.mark.parametrize("value, expected", [(None, None), ("null", None), (" None ", None), ("", None), ("2.5", 2.5),
                                             (3, 3.0), (0, 0.0), ("-1", -1.0), ("inf", math.inf)])  # fmt: skip
def test_optional_numbers(value, expected):
    assert as_optional_float(value, "max_minutes") == expected


@pytest.mark.parametrize("value", ["abc", "nan", True, [1.0], {"a": 1}])
def test_an_optional_number_that_is_not_one_is_an_error_naming_the_knob(value):
    with pytest.raises(ValueError, match="max_minutes must be a number or null"):
        as_optional_float(value, "max_minutes")


def test_network_switches_accept_cli_strings():
    net = VLDUN.from_preset("tiny", freq_decouple="false", use_clip_prior="False", seg_head="false")
    assert net.clip_prior is None and not net.use_seg_head and not net.freq_decouple
    assert not hasattr(net.stages["enc1"].prox[0], "fuse")  # the non-decoupled MDPMM
    with pytest.raises(ValueError, match="freq_decouple must be a boolean"):
        VLDUN.from_preset("tiny", freq_decouple="flase")


def test_checkpoint_handlers_accept_cli_strings(tmp_path):
    assert ResumeHandler(load_path=tmp_path / "x.pt", enabled="false", load_dict={}).enabled is False
    assert ResumeHandler(load_path=tmp_path / "x.pt", enabled="true", load_dict={}).enabled is True
    (tmp_path / "model.pt").write_bytes(b"")
    (tmp_path / "model.pt.json").write_text(json.dumps({"value": 0.5, "epoch": 3}))
    assert BestModelSaver(tmp_path, network=None, resume="false").best is None
    assert BestModelSaver(tmp_path, network=None, resume="true").best == 0.5


@pytest.mark.parametrize(
    "config, key, component",
    [
        ("train.json", "amp", "train#trainer#amp"),
        ("train.json", "amp", "validate#evaluator#amp"),
        ("inference.json", "amp", "evaluator#amp"),
        ("inference.json", "load_pretrain", "initialize"),
        ("multi_gpu_train.json", "ddp_find_unused_parameters", "network#find_unused_parameters"),
    ],
)
def test_config_flags_go_through_as_bool(config, key, component):
    files = (
        [CONFIGS / config] if config in ("train.json", "inference.json") else [CONFIGS / "train.json", CONFIGS / config]
    )
    p = ConfigParser()
    p.read_config([str(f) for f in files])
    assert f"@flags#{key}" in json.dumps(p.get(component))
    for text, expected in (("false", False), ("True", True)):
        p[key] = text
        assert p.get_parsed_content(f"flags#{key}", lazy=False) is expected
    p[key] = "flase"
    with pytest.raises(RuntimeError) as err:  # MONAI wraps the error; the cause names the knob
        p.get_parsed_content(f"flags#{key}", lazy=False)
    assert f"{key} must be a boolean (true/false), got 'flase'" in str(err.value.__cause__)


DISABLED = [
    ("train.json", "progress_bar", "train#handlers"),
    ("inference.json", "simulate_undersampling", "preprocessing"),
]


@pytest.mark.parametrize("config, key, path", DISABLED)
def test_disabled_switches_use_the_converted_flag(config, key, path):
    p = ConfigParser()
    p.read_config(str(CONFIGS / config))
    assert f'"$not @flags#{key}"' in json.dumps(p.get(path))
