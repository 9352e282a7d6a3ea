#!/usr/bin/env python
"""Exactness of a trained invertible model on val images (issue #11 acceptance, SPEC §5.6).

usage: python scripts/check_invertible.py MODEL_DIR DATA_DIR [--images 512] [--role-subset obj]

Prints, over the first N val images of the model's role subset: the relative reconstruction error
``||x - T^-1(T(x))|| / ||x||`` (max, median), the largest ``|logits - (A z + b)|`` (absolute and
relative to max |logit|), and for ``invertible_projection`` on the predicted class the tie gap
``|f_c(x_p) - f_j*(x_p)|`` relative to max |logit| (max, median) and the fraction of valid rows.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch


def main() -> None:
    """Load the model and data, print the numbers."""
    from bam.data import open_dataset
    from bam.methods import attribute_full
    from bam.models import load

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", type=Path)
    ap.add_argument("data", type=Path)
    ap.add_argument("--images", type=int, default=512)
    ap.add_argument("--subset", default=None, help="data subset (default: the model card's role)")
    args = ap.parse_args()
    model = load(args.model)
    sub = open_dataset(args.data).subset(args.subset or model.card.role, split="val")
    x, _, _ = sub.load_batch(list(range(min(args.images, len(sub)))))
    with torch.no_grad():
        z = model.features(x)
        rec = (x - model.inverse(z)).flatten(1).norm(dim=1) / x.flatten(1).norm(dim=1)
        logits = model(x)
        a, b = model.affine_head()
        head_err = (z.flatten(1) @ a.T + b - logits).abs().max()
    scale = logits.abs().amax(1)
    res = attribute_full("invertible_projection", model, x, logits.argmax(1))
    tie = res.extras["logit_gap_after"] / scale
    print(f"{model.card.arch} {model.card.role}: {x.shape[0]} val images")
    print(f"reconstruction ||x - T^-1(T(x))||/||x||: max {float(rec.max()):.2e}  median {float(rec.median()):.2e}")
    print(f"|logits - (A z + b)|: max {float(head_err):.2e} abs, {float(head_err / scale.max()):.2e} of max |logit|")
    print(f"tie gap at x_p / max |logit|: max {float(tie.max()):.2e}  median {float(tie.median()):.2e}; "
          f"valid {float(res.valid.float().mean()):.4f}")


if __name__ == "__main__":
    main()
