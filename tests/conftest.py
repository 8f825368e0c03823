"""Test-session setup shared by every test module."""

from __future__ import annotations

import os

import pytest

# OpenMP's default spin-waiting makes every parallel torch op cost ~30 ms when the cores are oversubscribed (CI
# machines and a shared 2-core box are); passive waiting removes that without changing results. It must be set
# before torch is imported, and subprocesses started by the end-to-end tests inherit it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


@pytest.fixture(scope="module")
def one_thread():
    """Run a module's in-process torch work on one thread: on a 2-core box shared with other jobs, two threads
    stall each other (5-16x slower measured on BiMamba layers)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
