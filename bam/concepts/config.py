"""TcavConfig: the TCAV protocol of the original BAM (``bam/run_tcav.py``), as a frozen dataclass.

Kim et al., "Interpretability Beyond Feature Attribution: Quantitative Testing with Concept
Activation Vectors (TCAV)", ICML 2018. Defaults are the original's: 100 images per set, 2 random
experiments, alpha = 0.1 for the linear classifier, every residual stage plus the logits.
"""

from __future__ import annotations

from dataclasses import dataclass

from bam.errors import BamError, choices_error

#: Name of the pseudo-bottleneck "the model output" (the original's ``logit``).
LOGIT = "logit"
#: ``summary_layer`` alias for the last residual stage.
LAST_STAGE = "last"
#: What the directional derivative differentiates (see docs/tcav.md).
GRADIENTS = ("logit", "log_softmax")
SPLITS = ("val", "train")


@dataclass(frozen=True)
class TcavConfig:
    """What one TCAV evaluation computes.

    ``concept_size``: images of the concept set (the common object on other scenes);
    ``random_size``: images of each random set and of the random counterpart;
    ``num_random``: random experiments (>= 2: the t-test needs a spread on both sides);
    ``alpha``: L2 weight of the hinge-loss linear classifier (sklearn SGDClassifier's ``alpha``);
    ``layers``: bottleneck names (empty = every residual stage + ``logit``);
    ``summary_layer``: the layer the one-number summary and the metrics use (``last`` = the last
    residual stage); ``target_images``: common-in-scene val images scored (None = all);
    ``seed``: draws the sets, the target selection and the classifier's held-out split;
    ``p_threshold``: significance level of the two-sided t-test; ``holdout``: fraction of each
    classifier's data kept out of training to report its accuracy (the original's 0.33);
    ``gradient``: ``logit`` (Kim et al.'s definition) or ``log_softmax`` (what the original's TF
    code differentiated, through the cross-entropy loss); ``split``: where the concept and random
    sets are drawn from; ``batch_size``: images per forward/backward.
    """

    concept_size: int = 100
    random_size: int = 100
    num_random: int = 2
    alpha: float = 0.1
    layers: tuple[str, ...] = ()
    summary_layer: str = LAST_STAGE
    target_images: int | None = 100
    seed: int = 0
    p_threshold: float = 0.05
    holdout: float = 0.33
    gradient: str = "logit"
    split: str = "val"
    batch_size: int = 64

    def __post_init__(self) -> None:
        for name, least in (("concept_size", 2), ("random_size", 2), ("batch_size", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise BamError(f"tcav {name} {value!r} is invalid; accepted: an integer >= {least}")
        if isinstance(self.num_random, bool) or not isinstance(self.num_random, int) or self.num_random < 2:
            raise BamError(f"tcav num_random {self.num_random!r} is invalid; accepted: an integer >= 2 "
                           "(the t-test against the random runs needs at least two)")
        if not self.alpha > 0:
            raise BamError(f"tcav alpha {self.alpha!r} is invalid; accepted: a number > 0")
        if not 0 < self.p_threshold < 1:
            raise BamError(f"tcav p_threshold {self.p_threshold!r} is invalid; accepted: a number in (0, 1)")
        if not 0 <= self.holdout < 1:
            raise BamError(f"tcav holdout {self.holdout!r} is invalid; accepted: a number in [0, 1)")
        if self.target_images is not None and (isinstance(self.target_images, bool) or self.target_images < 1):
            raise BamError(f"tcav target_images {self.target_images!r} is invalid; accepted: a positive integer "
                           "or null (all)")
        if self.gradient not in GRADIENTS:
            raise choices_error("tcav gradient", self.gradient, GRADIENTS)
        if self.split not in SPLITS:
            raise choices_error("tcav split", self.split, SPLITS)
        if len(set(self.layers)) != len(self.layers):
            raise BamError(f"tcav layers {list(self.layers)} repeat a name; accepted: distinct bottleneck names")
        if self.layers and self.summary_layer not in (LAST_STAGE, *self.layers):
            raise BamError(f"tcav summary_layer {self.summary_layer!r} is not among layers {list(self.layers)}; "
                           f"accepted: {LAST_STAGE!r} or one of the layers")
