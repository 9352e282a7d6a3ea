"""EvalConfig: what `bam evaluate` computes, as frozen dataclasses loaded from configs/eval/*.yaml."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from bam.concepts.config import TcavConfig
from bam.config import check_seed, short_repr
from bam.errors import BamError
from bam.schema import MASK_MODES, SPACES


@dataclass(frozen=True)
class PatchConfig:
    """The functionally insignificant patch of SPEC §4.6 (protocol defaults).

    The objective is ``||f(x+d) - f(x)||_2 - alpha * ||255 d||_2 + beta * 255 * P(x+d)`` with
    ``d`` in [0, 1] pixel units and P the L1 distance of x+d to the box [0, 1]: the original ran in
    0-255 units, so its terms are kept in those units and its step size 500 becomes
    ``500 / 255**2`` per unit of the [0, 1] gradient (``step_size`` below), an exact rescaling.
    """

    steps: int = 300
    alpha: float = 0.01
    beta: float = 0.01
    step_size: float = 500.0 / 255.0**2
    batch_size: int = 32

    def __post_init__(self) -> None:
        if self.steps < 0:
            raise BamError(f"iir_patch.steps {self.steps} must be >= 0")
        if self.step_size <= 0 or self.batch_size < 1:
            raise BamError(f"iir_patch step_size {self.step_size} / batch_size {self.batch_size}; accepted: > 0 / >= 1")


@dataclass(frozen=True)
class EvalConfig:
    """Resolved evaluation configuration (saved as OUT/config.yaml).

    ``methods``/``metrics``: empty = every registered one; a metric named here must run (a missing
    model role is then an error, not a skip). ``images``: metric -> number of val images (null =
    all; the selection is a fixed seeded permutation of the val images, so a smaller limit is a
    prefix of a larger one). ``method_images``: method -> at most this many images per metric (a
    prefix of the metric's selection; for expensive methods; every results row reports its n).
    ``method_params``: method -> parameter overrides of its paper defaults.
    ``metric_params``: metric -> parameter overrides of its defaults (``bam.metrics`` MetricInfo,
    e.g. ``iir: {threshold: 0.1}``). ``batch_size``: images per chunk (one cache file per chunk);
    ``micro_batch``: rows per forward/backward inside methods (null = the method's default).
    ``seed``: seeds the stochastic methods and the bootstrap (``--seed`` overrides it).
    Names in ``images``, ``method_params`` and ``metric_params`` are checked against the registries
    when the evaluation is planned.
    """

    name: str = "default"
    methods: tuple[str, ...] = ()
    metrics: tuple[str, ...] = ()
    images: Mapping[str, Any] = field(default_factory=dict)
    method_images: Mapping[str, Any] = field(default_factory=dict)
    method_params: Mapping[str, Any] = field(default_factory=dict)
    metric_params: Mapping[str, Any] = field(default_factory=dict)
    batch_size: int = 32
    micro_batch: int | None = None
    bootstrap: int = 1000
    confidence: float = 0.95
    seed: int = 0
    selection_seed: int = 0
    iir_patch: PatchConfig = field(default_factory=PatchConfig)
    #: the concept method TCAV (run when a tcav_* metric is evaluated; docs/tcav.md)
    tcav: TcavConfig = field(default_factory=TcavConfig)
    #: val composites attributed by every method for the report's heatmap gallery (0 = none)
    examples: int = 4
    #: attribution space (SPEC §5.8): "pixel" ([0, 1] image pixels) or "model" (the network input; the
    #: controls and the invertible methods stay in pixel space, bam.methods.method_space)
    space: str = "pixel"
    #: how object masks follow the maps to the network resolution in model space: "bilinear" (the
    #: original's PIL resize of the 0/1 mask) or "nearest"
    mask_mode: str = "bilinear"
    description: str = ""

    def __post_init__(self) -> None:
        check_seed(self.seed, "eval config seed")
        check_seed(self.selection_seed, "eval config selection_seed")
        if self.space not in SPACES:
            raise BamError(f"space {self.space!r} is invalid; accepted: {', '.join(SPACES)}")
        if self.mask_mode not in MASK_MODES:
            raise BamError(f"mask_mode {self.mask_mode!r} is invalid; accepted: {', '.join(MASK_MODES)}")
        if self.batch_size < 1:
            raise BamError(f"batch_size {self.batch_size} must be >= 1")
        if self.examples < 0:
            raise BamError(f"examples {self.examples} must be >= 0")
        if self.micro_batch is not None and self.micro_batch < 1:
            raise BamError(f"micro_batch {self.micro_batch} must be >= 1 or null")
        if self.bootstrap < 0 or not 0 < self.confidence < 1:
            raise BamError(f"bootstrap {self.bootstrap} / confidence {self.confidence}; accepted: >= 0 / in (0, 1)")
        for section in ("images", "method_images"):
            for k, v in dict(getattr(self, section)).items():
                if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                    raise BamError(f"{section}.{k} = {short_repr(v)}; accepted: a positive integer or null (all)")
        for section in ("method_params", "metric_params"):
            for k, v in dict(getattr(self, section)).items():
                if not isinstance(v, Mapping):
                    raise BamError(f"{section}.{k} = {short_repr(v)}; accepted: a mapping of parameter -> value")

    def image_limit(self, metric: str) -> int | None:
        """How many val images ``metric`` uses (None = all)."""
        return dict(self.images).get(metric)

    def method_image_cap(self, method: str) -> int | None:
        """At most this many images per metric for ``method`` (None = the metric's selection)."""
        return dict(self.method_images).get(method)

    def params_for(self, method: str) -> dict[str, Any]:
        """Parameter overrides for ``method`` (may be empty)."""
        return dict(dict(self.method_params).get(method) or {})

    def metric_params_for(self, metric: str) -> dict[str, Any]:
        """Parameter overrides for ``metric`` (may be empty)."""
        return dict(dict(self.metric_params).get(metric) or {})
