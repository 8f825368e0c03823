"""MONAI Label app entry (``<app>/main.py``, written by ``tools/monailabel_app.py``): the stock ``monaibundle`` app
(kept next to it as ``monaibundle_main.py``) with readable errors.

MONAI Label 0.8.5 has no exception handler of its own: an upload is stored without being opened, and whatever goes
wrong inside ``/infer`` (an unknown image id, a 4D or truncated study, a NaN voxel) reaches the client as HTTP 500
with no explanation. This app checks each study the way the command-line inference does
(``scripts.workflows.io.InputScreen``, through ``scripts.serving.study_problem`` of the served bundle) and answers
with FastAPI's ``HTTPException``, whose ``detail`` MONAI Label returns as ``{"detail": "..."}``:

- ``PUT /datastore/image`` of a study that cannot be served: 422, the study is not added;
- ``/infer`` with an unknown model: 404 naming the models there are; an image id not in the datastore: 404;
- ``/infer`` on a study (stored or posted) that cannot be served: 422 naming the image and the problem;
- any other failure inside ``/infer``: 500 with the innermost error, the image and the model (and the traceback in
  the server log).

Its trainers are ``monailabel_train.VLDUNTrainTask`` (next to it in the app folder): the stock ``BundleTrainTask``
with the bundle's ``configs/monailabel.json`` merged over ``train.json``.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from typing import Any

import monaibundle_main  # the stock sample app; imported as a module so MONAI Label finds only VLDUNApp here
from fastapi import HTTPException
from monailabel.interfaces.app import MONAILabelApp
from monailabel.utils.others.class_utils import unload_module
from monailabel_train import VLDUNTrainTask

logger = logging.getLogger(__name__)

#: how many datastore ids a "no such image" answer lists
SHOWN_IDS = 10


def _bundle_serving(bundle_path: str) -> Any:
    """The served bundle's ``scripts.serving``, imported the way ``BundleInferTask`` imports bundle code (the bundle
    folder first on ``sys.path``, then ``scripts`` unloaded again so the next task imports its own copy)."""
    sys.path.insert(0, bundle_path)
    unload_module("scripts")
    try:
        return importlib.import_module("scripts.serving")
    finally:
        sys.path.remove(bundle_path)
        unload_module("scripts")


class VLDUNApp(monaibundle_main.MyApp, MONAILabelApp):
    def _serving(self, model: str | None = None) -> Any:
        return _bundle_serving(str(self.models.get(model) or next(iter(self.models.values()))))

    def init_trainers(self):
        # the stock app's trainers (models with a train.json, none with skip_trainers), with the MONAI Label overlay
        return {n: VLDUNTrainTask(self.models[n], self.conf) for n in super().init_trainers()}

    def init_datastore(self):
        datastore = super().init_datastore()
        add_image = datastore.add_image

        def checked_add_image(image_id: str, image_filename: str, image_info: dict[str, Any]) -> str:
            name = image_id or os.path.basename(image_filename)
            problem = self._serving().study_problem(image_filename, name=f"study {name!r}")
            if problem:
                raise HTTPException(status_code=422, detail=f"upload rejected, nothing was stored: {problem}")
            return add_image(image_id, image_filename, image_info)

        datastore.add_image = checked_add_image
        return datastore

    def infer(self, request, datastore=None):
        model = request.get("model")
        if model not in self._infers:
            models = ", ".join(sorted(self._infers))
            raise HTTPException(status_code=404, detail=f"no model {model!r} on this server; its models: {models}")
        image = request.get("image")
        posted = isinstance(image, str) and os.path.exists(image)
        shown = "the posted file" if posted else f"image {image!r}"
        if isinstance(image, str) and not posted:
            store = datastore or self.datastore()
            if not store.get_image_uri(image):
                ids = sorted(store.list_images())
                listed = ", ".join(ids[:SHOWN_IDS]) + (f", ... ({len(ids)} in all)" if len(ids) > SHOWN_IDS else "")
                raise HTTPException(
                    status_code=404,
                    detail=f"no image {image!r} in the datastore (it has: {listed or 'no images'}); upload it with "
                    f"PUT /datastore/image?image={image} or post the file to /infer/{model} (-F file=@...)",
                )
        serving = self._serving(model)
        if isinstance(image, str):
            path = image if posted else (datastore or self.datastore()).get_image_uri(image)
            problem = serving.study_problem(path, name=shown)
            if problem:
                raise HTTPException(status_code=422, detail=f"cannot run {model!r}: {problem}")
        try:
            return super().infer(request, datastore)
        except HTTPException:
            raise
        except Exception as e:
            logger.exception(f"inference of {shown} with {model!r} failed")
            detail = f"inference of {shown} with model {model!r} failed: {serving.failure_message(e)}"
            raise HTTPException(status_code=500, detail=detail) from e
