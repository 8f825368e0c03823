"""Test-session setup shared by every test module."""

from __future__ import annotations

import os

# OpenMP's default spin-waiting makes every parallel torch op cost ~30 ms when the cores are oversubscribed (CI
# machines and a shared 2-core box are); passive waiting removes that without changing results. It must be set
# before torch is imported, and subprocesses started by the end-to-end tests inherit it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
