"""MONAI Label trainer of the app that ``tools/monailabel_app.py`` writes (``<app>/monailabel_train.py``, used by its
``main.py``): MONAI Label 0.8.5's ``BundleTrainTask`` with the bundle's MONAI Label overlay merged over ``train.json``.

``BundleTrainTask`` reads one config, ``configs/train.json``. The bundle keeps what only MONAI Label training needs
in ``configs/monailabel.json`` (``scripts.serving.SaveIfNotValidated``: MONAI Label's own split leaves no validation
data while fewer than three images are labelled, and then the final weights become ``models/model.pt``), so this task
reads ``['train.json', 'monailabel.json']`` as ``python -m monai.bundle run --config_file`` would merge them. The
merged config is what MONAI Label then runs (in-process, or exported to ``monailabel_train.json`` for multi-GPU).
A bundle without the overlay trains from ``train.json`` alone, as with the stock task.
"""

from __future__ import annotations

import os

from monailabel.tasks.train.bundle import BundleTrainTask

#: the overlay, in the bundle's ``configs`` folder, merged over the train config
OVERLAY = "monailabel.json"

__all__ = ["OVERLAY", "VLDUNTrainTask"]


class VLDUNTrainTask(BundleTrainTask):
    def _load_bundle_config(self, path, config):
        overlay = os.path.join(path, "configs", OVERLAY)
        if os.path.isfile(overlay):
            # the merged files are also what run_single_gpu passes to monai.bundle.run as config_file
            self.bundle_config_path = [config, overlay]
        return super()._load_bundle_config(path, self.bundle_config_path)
