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
#: ``summary_layer`` aliases: the last residual stage, the one before it (the default).
LAST_STAGE = "last"
PENULTIMATE_STAGE = "penultimate"
STAGE_ALIASES = (PENULTIMATE_STAGE, LAST_STAGE)
#: What the directional derivative differentiates (see docs/tcav.md).
GRADIENTS = ("log_softmax", "logit")
SPLITS = ("train", "val")


@dataclass(frozen=True)
class TcavConfig:
    """What one TCAV evaluation computes.

    ``concept_size``: images of the concept set (composites of the common object);
    ``random_size``: images of each random set and of the random counterpart;
    ``num_random``: random experiments (>= 2: the t-test needs a spread on both sides);
    ``alpha``: L2 weight of the hinge-loss linear classifier (sklearn SGDClassifier's ``alpha``);
    ``layers``: bottleneck names (empty = every residual stage + ``logit``);
    ``summary_layer``: the layer the one-number summary and the metrics use (``penultimate``, the
    default: the residual stage before the last; ``last``: the last stage; or a layer name: see
    docs/tcav.md for why not the last stage or ``logit``); ``target_images``: common-in-scene val
    images scored (None = all);
    ``seed``: draws the sets, the target selection and the classifier's held-out split;
    ``p_threshold``: significance level of the two-sided t-test; ``holdout``: fraction of each
    classifier's data kept out of training to report its accuracy (the original's 0.33);
    ``gradient``: ``log_softmax`` (what the original's TF code differentiated, through the
    cross-entropy loss; the default) or ``logit`` (Kim et al.'s Eq. 2; its gradient is the same for
    every image at ``logit`` and at a last stage followed by average pooling and a linear head,
    so those rows degenerate to 0 or 1); ``split``: where the concept and random sets are drawn
    from (``train``: every scene in proportion, disjoint from the val targets; ``val``: images no
    model was trained on, without the common scene, whose val images are the targets); ``batch_size``:
    images per forward/backward.
    """

    concept_size: int = 100
    random_size: int = 100
    num_random: int = 2
    alpha: float = 0.1
    layers: tuple[str, ...] = ()
    summary_layer: str = PENULTIMATE_STAGE
    target_images: int | None = 100
    seed: int = 0
    p_threshold: float = 0.05
    holdout: float = 0.33
    gradient: str = "log_softmax"
    split: str = "train"
    batch_size: int = 64

    def __post_init__(self) -> None:
        for name, least in (("concept_size", 2), ("random_size", 2), ("batch_size", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise BamError(f"tcav {name} {value!r} is invalid; accepted: an integer >= {least}")
        if isinstance(self.num_random, bool) or not isinstance(self.num_random, int) or self.num_random < 2:
            raise BamError(f"tcav num_random {self.num_random!r} is invalid; accepted: an integer >= 2 "
                           "(the t-test against the random runs needs at least two)")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise BamError(f"tcav seed {self.seed!r} is invalid; accepted: an integer >= 0")
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
        if self.layers and self.summary_layer not in (*STAGE_ALIASES, *self.layers):
            raise BamError(f"tcav summary_layer {self.summary_layer!r} is not among layers {list(self.layers)}; "
                           f"accepted: {', '.join(STAGE_ALIASES)} or one of the layers")
