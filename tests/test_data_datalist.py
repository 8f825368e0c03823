"""The shared datalist writer (``scripts.data.datalist``) that the converters and the demo generator both use."""

from __future__ import annotations

import json
import os

from scripts.data import datalist, demo, prepare
from scripts.data.datalist import SPLITS, assemble_datalist, datalist_item, write_datalist


def _item(i: int) -> dict:
    return datalist_item(f"img/{i}.nii.gz", f"lab/{i}.nii.gz", "MRI", f"c{i}", {"patient_id": f"p{i}"})


def test_assemble_orders_header_counts_and_splits():
    header = {"name": "toy", "labels": {"0": "background"}, "numTraining": "overwritten"}
    items = [("validation", _item(0)), ("training", _item(1)), ("training", _item(2))]
    dl = assemble_datalist(header, items)
    assert list(dl) == ["name", "labels", "numTraining", "numValidation", "numTest", "training", "validation"]
    assert (dl["numTraining"], dl["numValidation"], dl["numTest"]) == (2, 1, 0)
    assert [it["case_id"] for it in dl["training"]] == ["c1", "c2"], "items keep their order within a split"
    assert list(dl["training"][0]) == ["image", "label", "modality", "case_id", "metadata"]
    assert "test" not in dl, "MONAI's load_decathlon_datalist cannot read an empty test list"
    with_test = assemble_datalist(header, [*items, ("test", _item(3))])
    assert list(with_test)[-1] == "test" and with_test["numTest"] == 1
    assert SPLITS == ("training", "validation", "test")


def test_write_is_indented_json_monai_reads(tmp_path):
    from monai.data import load_decathlon_datalist

    for i in range(2):
        (tmp_path / "img").mkdir(exist_ok=True)
        (tmp_path / "img" / f"{i}.nii.gz").touch()
    dl = assemble_datalist({"name": "toy"}, [("training", _item(0)), ("test", _item(1))])
    out = tmp_path / "sub" / "datalist.json"
    write_datalist(out, dl)
    text = out.read_text()
    assert text == json.dumps(dl, indent=2) + "\n"
    assert os.listdir(out.parent) == ["datalist.json"], "no temporary file left behind"
    assert load_decathlon_datalist(out, data_list_key="test", base_dir=tmp_path)[0]["case_id"] == "c1"


def test_converters_and_demo_share_the_writer(tmp_path):
    assert prepare.write_datalist is demo.write_datalist is datalist.write_datalist
    assert prepare.assemble_datalist is demo.assemble_datalist is datalist.assemble_datalist
    path = demo.ensure_demo_data(tmp_path / "demo", num_cases=2, shape=(24, 24, 5))
    dl = json.loads(open(path).read())
    assert list(dl)[-5:] == ["numTraining", "numValidation", "numTest", "training", "validation"]
