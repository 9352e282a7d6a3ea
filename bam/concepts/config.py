"""TcavConfig: the TCAV protocol of the original BAM (``bam/run_tcav.py``), as a frozen dataclass.

Kim et al., "Interpretability Beyond Feature Attribution: Quantitative Testing with Concept
Activation Vectors (TCAV)", ICML 2018. Defaults are the original's: 100 images per set, 2 random
experiments, alpha = 0.1 for the linear classifier, every residual stage plus the logits.
"""

from __future__ import annotations

from dataclasses import dataclass

from bam.config import Validated, checked, one_of
from bam.errors import BamError

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
class TcavConfig(Validated):
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

    concept_size: int = checked(100, ge=2)
    random_size: int = checked(100, ge=2)
    num_random: int = checked(2, ge=2, note="the t-test against the random runs needs at least two")
    alpha: float = checked(0.1, gt=0)
    layers: tuple[str, ...] = ()
    summary_layer: str = PENULTIMATE_STAGE
    target_images: int | None = checked(100, ge=1, note="or null: all")
    seed: int = checked(0, ge=0)
    p_threshold: float = checked(0.05, gt=0, lt=1)
    holdout: float = checked(0.33, ge=0, lt=1)
    gradient: str = one_of("log_softmax", GRADIENTS)
    split: str = one_of("train", SPLITS)
    batch_size: int = checked(64, ge=1)

    def __post_init__(self) -> None:
        """Check every field (types and declared values), then the layers."""
        super().__post_init__()
        if len(set(self.layers)) != len(self.layers):
            raise BamError(f"tcav layers {list(self.layers)} repeat a name; accepted: distinct bottleneck names")
        if self.layers and self.summary_layer not in (*STAGE_ALIASES, *self.layers):
            raise BamError(f"tcav summary_layer {self.summary_layer!r} is not among layers {list(self.layers)}; "
                           f"accepted: {', '.join(STAGE_ALIASES)} or one of the layers")
