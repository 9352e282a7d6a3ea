"""Attribution methods: one registry, one uniform call.

>>> from bam.methods import attribute, list_methods
>>> attr = attribute("integrated_gradients", model, images, target=labels, steps=25)

``attribute`` returns a tensor shaped like ``inputs``; rows where the method failed (see
``AttributionResult.valid``) are NaN so they can never be scored silently. ``attribute_full``
returns the :class:`AttributionResult` with per-image records. Methods are added by one file
with :func:`register_method` plus one import below; users add their own as
``package.module:callable`` or through the entry-point group ``bam.methods``.
"""

from __future__ import annotations

from bam.methods import boundary as _boundary  # noqa: F401
from bam.methods import controls as _controls  # noqa: F401
from bam.methods import deeplift as _deeplift  # noqa: F401
from bam.methods import feature_inversion as _feature_inversion  # noqa: F401
from bam.methods import gradcam as _gradcam  # noqa: F401

# Built-in methods: importing a module registers its methods.
from bam.methods import gradient as _gradient  # noqa: F401
from bam.methods import guided as _guided  # noqa: F401
from bam.methods import integrated_gradients as _ig  # noqa: F401
from bam.methods import invertible as _invertible  # noqa: F401
from bam.methods import smoothgrad as _smoothgrad  # noqa: F401
from bam.methods._base import METHODS, AttributionResult, MethodInfo, register_method
from bam.methods._call import (
    attribute,
    attribute_full,
    call_method,
    get_info,
    list_methods,
    resolve_method,
    resolve_params,
)
from bam.methods._space import AttributionSpace, SpaceView, baseline_image, method_space, to_space

__all__ = [
    "METHODS",
    "AttributionResult",
    "AttributionSpace",
    "MethodInfo",
    "SpaceView",
    "attribute",
    "attribute_full",
    "baseline_image",
    "call_method",
    "get_info",
    "list_methods",
    "method_space",
    "register_method",
    "resolve_method",
    "resolve_params",
    "to_space",
]
