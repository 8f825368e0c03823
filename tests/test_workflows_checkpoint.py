"""Checkpointing: atomic writes, best-model selection, latest state and resuming at the next epoch."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import pytest
import torch
from ignite.engine import Engine, Events

from scripts.workflows.checkpoint import (
    BestModelSaver,
    LatestCheckpointSaver,
    ResumeHandler,
    save_atomic,
    unwrap_module,
)


class _Unpicklable:
    def __reduce__(self):
        raise RuntimeError("boom while pickling")


def test_save_atomic_writes_weights_only_loadable_files_and_never_half_files(tmp_path):
    path = tmp_path / "sub" / "model.pt"
    sd = torch.nn.Linear(3, 2).state_dict()
    save_atomic(sd, path)
    loaded = torch.load(path, weights_only=True)
    assert all(torch.equal(loaded[k], sd[k]) for k in sd)
    assert oct(path.stat().st_mode & 0o777) == "0o644"
    # a failing save leaves the previous file untouched and no temporary file behind
    with pytest.raises(RuntimeError, match="boom"):
        save_atomic({"bad": _Unpicklable()}, path)
    loaded = torch.load(path, weights_only=True)
    assert all(torch.equal(loaded[k], sd[k]) for k in sd)
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.pt"]


def _sha256(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _evaluator(metric_values):
    """An engine whose epoch i ends with metrics {"dice": metric_values[i]}."""
    values = iter(metric_values)
    eng = Engine(lambda e, b: None)
    eng.state.key_metric_name = "dice"

    @eng.on(Events.EPOCH_COMPLETED)
    def _set(e):  # registered before the saver, so it runs first
        e.state.metrics["dice"] = next(values)

    return eng


def test_best_model_saver_keeps_the_best_epoch(tmp_path):
    net = torch.nn.Linear(2, 2)
    eng = _evaluator([0.2, 0.5, 0.4])
    saver = BestModelSaver(tmp_path, torch.nn.DataParallel(net))
    saver.attach(eng)
    saved_weights = {}

    @eng.on(Events.EPOCH_COMPLETED)
    def _perturb(e):  # after the saver: remember what was saved at this epoch, then change the weights
        if (tmp_path / "model.pt").is_file():
            saved_weights[e.state.epoch] = torch.load(tmp_path / "model.pt", weights_only=True)["weight"].clone()
        with torch.no_grad():
            net.weight.add_(1.0)

    weights = []
    eng.add_event_handler(Events.EPOCH_STARTED, lambda e: weights.append(net.weight.detach().clone()))
    eng.run([0], max_epochs=3)
    rec = json.loads((tmp_path / "model.pt.json").read_text())
    # the sha256 ties the record to these very weights: tools/package_bundle.py refuses weights it does not match
    expected = {"metric": "dice", "value": 0.5, "epoch": 2, "sha256": _sha256(tmp_path / "model.pt")}
    assert rec == {**expected, "metrics": {"dice": 0.5}}, "every validation metric of the best epoch is recorded"
    sd = torch.load(tmp_path / "model.pt", weights_only=True)
    assert set(sd) == {"weight", "bias"}, "DataParallel must be unwrapped (no 'module.' prefix)"
    assert torch.equal(sd["weight"], weights[1]), "model.pt must hold the epoch-2 weights"
    assert torch.equal(saved_weights[3], weights[1]), "epoch 3 (worse) must not overwrite model.pt"


def test_best_model_saver_min_mode_nan_and_resume(tmp_path):
    net = torch.nn.Linear(2, 2)
    eng = _evaluator([0.3, float("nan"), 0.1])
    BestModelSaver(tmp_path, net, filename="m.pt", mode="min").attach(eng)
    eng.run([0], max_epochs=3)
    assert json.loads((tmp_path / "m.pt.json").read_text())["epoch"] == 3
    # resuming keeps the recorded best (0.1): a worse value must not overwrite it
    eng2 = _evaluator([0.2])
    s2 = BestModelSaver(tmp_path, net, filename="m.pt", mode="min", resume=True)
    s2.attach(eng2)
    eng2.run([0], max_epochs=1)
    assert json.loads((tmp_path / "m.pt.json").read_text())["value"] == pytest.approx(0.1)
    # a record of weights saved without validation (MONAI Label, see scripts/serving.py) has no best value to keep
    (tmp_path / "m.pt.json").write_text(json.dumps({"metric": None, "value": None, "epoch": 1, "sha256": "0"}))
    assert BestModelSaver(tmp_path, net, filename="m.pt", mode="min", resume=True).best is None
    with pytest.raises(ValueError):
        BestModelSaver(tmp_path, net, mode="best")


def _trainer(net, opt, sched, seen):
    def step(engine, batch):
        opt.zero_grad()
        loss = (net(batch) ** 2).mean()
        loss.backward()
        opt.step()
        return loss.item()

    eng = Engine(step)
    eng.add_event_handler(Events.EPOCH_STARTED, lambda e: seen.append(e.state.epoch))
    eng.add_event_handler(Events.EPOCH_COMPLETED, lambda e: sched.step())
    return eng


def _objects(seed):
    torch.manual_seed(seed)
    net = torch.nn.Linear(4, 1)
    opt = torch.optim.AdamW(net.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    return net, opt, sched


def test_latest_checkpoint_and_resume_continue_at_the_next_epoch(tmp_path):
    data = [torch.randn(3, 4) for _ in range(2)]
    path = tmp_path / "latest.pt"
    net, opt, sched = _objects(0)
    seen: list[int] = []
    eng = _trainer(net, opt, sched, seen)
    LatestCheckpointSaver(path, {"model": net, "optimizer": opt, "lr_scheduler": sched}).attach(eng)
    eng.run(data, max_epochs=2)
    assert seen == [1, 2]
    ckpt = torch.load(path, weights_only=True)  # the full state is weights_only-loadable too
    assert set(ckpt) == {"model", "optimizer", "lr_scheduler", "trainer"}
    assert ckpt["trainer"]["iteration"] == 4

    # a fresh process: different init, resumes from the file and runs only epoch 3
    net2, opt2, sched2 = _objects(1)
    seen2: list[int] = []
    eng2 = _trainer(net2, opt2, sched2, seen2)
    ResumeHandler(path, {"model": net2, "optimizer": opt2, "lr_scheduler": sched2}).attach(eng2)
    restored = {}
    eng2.add_event_handler(Events.EPOCH_STARTED, lambda e: restored.setdefault("w", net2.weight.detach().clone()))
    eng2.run(data, max_epochs=3)
    assert seen2 == [3]
    assert torch.equal(restored["w"], ckpt["model"]["weight"])
    assert sched2.get_last_lr()[0] == pytest.approx(0.1 * 0.5**3)

    # the same run uninterrupted gives the same weights
    net3, opt3, sched3 = _objects(0)
    _trainer(net3, opt3, sched3, []).run(data, max_epochs=3)
    assert torch.allclose(net3.weight, net2.weight, atol=1e-6)


def test_resume_errors_and_disabled(tmp_path):
    net, opt, sched = _objects(0)
    eng = _trainer(net, opt, sched, [])
    missing = tmp_path / "nope.pt"
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        ResumeHandler(missing, {"model": net}).attach(eng)
    ResumeHandler(missing, {"model": net}, enabled=False).attach(eng)  # no-op
    assert unwrap_module(torch.nn.DataParallel(net)) is net


def test_no_temporary_files_survive(tmp_path):
    net, opt, sched = _objects(0)
    eng = _trainer(net, opt, sched, [])
    LatestCheckpointSaver(tmp_path / "l.pt", {"model": net}).attach(eng)
    eng.run([torch.randn(2, 4)], max_epochs=3)
    assert os.listdir(tmp_path) == ["l.pt"]


def test_latest_checkpoint_is_written_once_per_epoch_and_again_only_after_an_interrupted_epoch(tmp_path, caplog):
    net, opt, sched = _objects(0)
    eng = _trainer(net, opt, sched, [])
    LatestCheckpointSaver(tmp_path / "l.pt", {"model": net}).attach(eng)
    with caplog.at_level(logging.INFO, logger="scripts.workflows.checkpoint"):
        eng.run([torch.randn(2, 4)] * 2, max_epochs=3)
    assert [r.getMessage().split(",")[0] for r in caplog.records if "LatestCheckpointSaver" in r.getMessage()] == [
        "LatestCheckpointSaver: epoch 1",
        "LatestCheckpointSaver: epoch 2",
        "LatestCheckpointSaver: epoch 3",
    ]
    # stopped in the middle of an epoch: COMPLETED saves what was trained since the last epoch's file
    net, opt, sched = _objects(0)
    eng = _trainer(net, opt, sched, [])
    eng.add_event_handler(Events.ITERATION_COMPLETED(once=3), lambda e: e.terminate())
    LatestCheckpointSaver(tmp_path / "m.pt", {"model": net}).attach(eng)
    eng.run([torch.randn(2, 4)] * 2, max_epochs=3)
    assert torch.load(tmp_path / "m.pt", weights_only=True)["trainer"]["iteration"] == 3
