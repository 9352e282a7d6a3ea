"""Concept-based explanations: TCAV (Kim et al., ICML 2018), the concept row of the original BAM.

>>> from bam.concepts import TcavConfig, tcav_records
>>> result = tcav_records({"obj": (obj_model, obj_sha), "scene": (scene_model, scene_sha)}, data,
...                       TcavConfig(), cache_dir="runs/eval/cache")
>>> result.summary[["model_role", "layer", "score", "p_value", "significant"]]

Concept methods score a concept per (model, class), not per pixel, so they have their own
registry (:data:`CONCEPT_METHODS`) and interface instead of :func:`bam.methods.attribute`.
The metrics over the records are :func:`bam.metrics.tcav.tcav_mcs` and ``tcav_rmcs``.
"""

from __future__ import annotations

from bam.concepts._cache import CavCache
from bam.concepts._capture import find_bottlenecks, resolve_layers
from bam.concepts._engine import TcavJob
from bam.concepts._registry import (
    CONCEPT_METHODS,
    ConceptMethodInfo,
    concept_method_info,
    get_concept_method,
    list_concept_methods,
    register_concept_method,
)
from bam.concepts._stats import t_two_sided_p, ttest_ind
from bam.concepts.config import LAST_STAGE, LOGIT, PENULTIMATE_STAGE, TcavConfig
from bam.concepts.sets import (
    ConceptSets,
    DataImageSource,
    ImageSet,
    ImageSource,
    TensorImageSource,
    build_concept_sets,
    sets_table,
)
from bam.concepts.tcav import (
    CAV_COLUMNS,
    RECORD_COLUMNS,
    SUMMARY_COLUMNS,
    ModelSpec,
    TcavResult,
    run_tcav,
    target_class,
    tcav_records,
)

__all__ = [
    "CAV_COLUMNS", "CONCEPT_METHODS", "LAST_STAGE", "LOGIT", "PENULTIMATE_STAGE", "RECORD_COLUMNS",
    "SUMMARY_COLUMNS", "CavCache", "ConceptMethodInfo", "ConceptSets", "DataImageSource", "ImageSet", "ImageSource",
    "ModelSpec", "TcavConfig", "TcavJob", "TcavResult", "TensorImageSource", "build_concept_sets",
    "concept_method_info", "find_bottlenecks", "get_concept_method", "list_concept_methods",
    "register_concept_method", "resolve_layers", "run_tcav", "sets_table", "t_two_sided_p", "target_class",
    "tcav_records", "ttest_ind",
]
