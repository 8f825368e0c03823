"""Custom code of the VL-DUN bundle.

MONAI Label imports a bundle's custom code as the top-level package ``scripts`` (it puts the bundle root on
``sys.path``), so the package keeps that name. Layout follows Fig. 2 of the paper:

- ``scripts.networks``: the VL-DUN network (CLIP dual prior, AMGDM, MDPMM, BiMamba, heads).
- ``scripts.transforms``: k-space undersampling and the primitive degradations for CLIP fine-tuning.
- ``scripts.data``: the built-in demo phantoms and converters from common dataset layouts to datalists.
- ``scripts.workflows``: the pieces the JSON workflows need that MONAI does not provide (joint loss, trainer).
"""
