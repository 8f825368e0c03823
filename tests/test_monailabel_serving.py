"""scripts.serving: the bundle's MONAI Label specific pieces, as units (fast)."""

from __future__ import annotations

import hashlib
import json
import threading

import pytest
import torch
from ignite.engine import Engine, Events
from monai.data import MetaTensor
from torch import nn

from scripts.serving import NetworkOutputInferer, RestoredAsPredd, SaveIfNotValidated, with_output


class _TwoHead(nn.Module):
    """Stand-in with VL-DUN's output switch: seg = 2 channels (x, -x), restored = 3x."""

    def __init__(self, output="seg"):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(3.0))
        self.output = output

    def set_output(self, output):
        if output not in ("dict", "seg", "restored"):
            raise ValueError(output)
        self.output = output

    def forward(self, x):
        out = {"seg": torch.cat([x, -x], 1), "restored": self.scale * x}
        return out if self.output == "dict" else out[self.output]


def test_with_output_leaves_the_shared_network_alone():
    net = _TwoHead("seg")
    x = torch.ones(1, 1, 2, 2)
    view = with_output(net, "dict")
    out = view(x)
    assert set(out) == {"seg", "restored"} and net.output == "seg"
    assert isinstance(net(x), torch.Tensor) and net(x).shape == (1, 2, 2, 2)
    # the view shares the parameters: training/loading the network is seen through it
    with torch.no_grad():
        net.scale.fill_(5.0)
    assert torch.equal(view(x)["restored"], 5 * x)
    assert with_output(net, "seg") is net
    ts_like = nn.Identity()
    assert with_output(ts_like, "dict") is ts_like


def test_network_output_inferer_under_concurrent_calls():
    net = _TwoHead("seg")
    inferer = NetworkOutputInferer(lambda inputs, network: network(inputs), output="dict")
    errors = []

    def call():
        for _ in range(50):
            out = inferer(torch.ones(1, 1, 2, 2), net)
            if not isinstance(out, dict):
                errors.append(type(out))
            if not isinstance(net(torch.ones(1, 1, 2, 2)), torch.Tensor):
                errors.append("shared network switched")

    threads = [threading.Thread(target=call) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


def test_restored_as_pred_moves_the_image_and_keeps_the_segmentation():
    seg = MetaTensor(torch.full((1, 4, 4, 2), 2.0))
    rest = MetaTensor(torch.rand(1, 4, 4, 2))
    d = RestoredAsPredd()({"pred": seg, "restored": rest, "result": {"restored": "/x.nii.gz"}})
    assert d["pred"] is rest and d["seg"] is seg and d["result"] == {"restored": "/x.nii.gz"}
    with pytest.raises(KeyError, match="restored"):
        RestoredAsPredd()({"pred": seg})


def _trainer_and_validator(n_val: int):
    validator = Engine(lambda e, b: b)
    trainer = Engine(lambda e, b: b)

    @trainer.on(Events.EPOCH_COMPLETED)
    def _validate(engine):
        if n_val:
            validator.run(list(range(n_val)), max_epochs=1)

    return trainer, validator


def test_save_if_not_validated_saves_only_without_validation_data(tmp_path):
    net = nn.Linear(2, 2)
    for n_val, expect in ((0, True), (2, False)):
        out = tmp_path / f"n{n_val}"
        trainer, validator = _trainer_and_validator(n_val)
        handler = SaveIfNotValidated(out, net, validator=validator)
        handler.attach(trainer)
        trainer.run([0, 1], max_epochs=1)
        assert (out / "model.pt").is_file() == expect
    state = torch.load(tmp_path / "n0" / "model.pt", weights_only=True)
    assert set(state) == {"weight", "bias"} and torch.equal(state["weight"], net.weight.detach())


def test_save_if_not_validated_records_the_weights_it_writes(tmp_path):
    """MONAI Label's /train (fewer than three labelled images) replaces model.pt through this handler; a record left
    from an earlier training run would then describe other weights, so the handler rewrites it."""
    (tmp_path / "model.pt.json").write_text(json.dumps({"metric": "val_mean_dice", "value": 0.9, "epoch": 40}))
    trainer, validator = _trainer_and_validator(0)
    SaveIfNotValidated(tmp_path, nn.Linear(2, 2), validator=validator).attach(trainer)
    trainer.run([0, 1], max_epochs=2)
    rec = json.loads((tmp_path / "model.pt.json").read_text())
    assert rec["sha256"] == hashlib.sha256((tmp_path / "model.pt").read_bytes()).hexdigest()
    assert rec["value"] is None and rec["epoch"] == 2 and "SaveIfNotValidated" in rec["saved_by"]
