"""Known answers on a hand-built model whose bottleneck encodes the concept along a known direction v."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from _toy import ToyNet, toy_sets, toy_source

from bam.concepts import (
    RECORD_COLUMNS,
    SUMMARY_COLUMNS,
    CavCache,
    ModelSpec,
    TcavConfig,
    TcavJob,
    run_tcav,
)
from bam.concepts._capture import resolve_layers
from bam.concepts._engine import Counters, SetPool, Work, model_cavs


def _job(model: ToyNet, concept_shift: float, target_shift: float, num_random: int = 2, seed: int = 0,
         scale: float = 1.0, **cfg: object) -> TcavJob:
    sets = toy_sets(100, num_random)
    return TcavJob(sets, toy_source(model, sets, concept_shift, target_shift, seed, scale),
                   TcavConfig(num_random=num_random, seed=seed, **cfg), CavCache(None))  # type: ignore[arg-type]


def _cavs(model: ToyNet, job: TcavJob) -> dict[str, torch.Tensor]:
    layers = resolve_layers(model, ())
    return {n: v for n, (v, _) in model_cavs(Work(job, SetPool(job), Counters()), model, "toy", layers).items()}


@pytest.mark.parametrize(("shift", "scale"), [(200.0, 1.0), (20.0, 0.02)])
def test_cav_recovers_the_concept_direction(shift: float, scale: float) -> None:
    """Hard-margin regime (classes far apart) and regularised regime (every point inside the margin,
    where the SVM's normal is the difference of the class means): both point along v."""
    model = ToyNet()
    cav = _cavs(model, _job(model, shift, 0.0, scale=scale))["block_layer1"]
    cos = cav @ model.v
    assert cav.shape == (4, 64)
    assert (cos[:2] > 0.99).all(), cos  # concept vs random500_0 / random500_1
    assert (cos[2:].abs() < 0.5).all(), cos  # counterpart vs random: no direction in common with v
    assert torch.allclose(cav.norm(dim=1), torch.ones(4), atol=1e-5)


@pytest.mark.parametrize("gradient", ["log_softmax", "logit"])
def test_tcav_score_is_one_or_zero_as_constructed(gradient: str) -> None:
    model = ToyNet()
    job = _job(model, 200.0, 4.0, gradient=gradient)
    specs = [ModelSpec("obj", model, "toyhash", 0, "linear"), ModelSpec("scene", model, "toyhash", 1, "anti")]
    res = run_tcav(job, specs)
    assert list(res.records.columns) == RECORD_COLUMNS and list(res.summary.columns) == SUMMARY_COLUMNS
    s = res.summary.set_index(["model_role", "layer"])
    assert s.loc[("obj", "block_layer1"), "score"] == 1.0 and s.loc[("scene", "block_layer1"), "score"] == 0.0
    assert s.loc[("obj", "block_layer1"), "cav_accuracy"] == 1.0
    # class 0's gradient is v (logit) or 2 p_1 v (log-softmax): the derivative is v.cav times that
    cav = _cavs(model, job)["block_layer1"]
    rec = res.records[(res.records["layer"] == "block_layer1") & (res.records["model_role"] == "obj")]
    with torch.no_grad():
        p1 = torch.softmax(model(job.source.load(job.sets.targets, range(100))).double(), 1)[:, 1].numpy()
    factor = np.ones(100) if gradient == "logit" else 2 * p1
    for (kind, run), grp in rec.groupby(["kind", "run"]):
        j = run + (2 if kind == "random" else 0)
        np.testing.assert_allclose(grp["derivative"], factor * float(cav[j] @ model.v), rtol=1e-4, atol=1e-30)
        assert len(grp) == 100 and grp["image_id"].is_unique
    assert res.counts["gradient_images"] == 200 and res.counts["cavs_trained"] == 16  # 2 models x 2 layers x 4
    assert s.loc[("obj", "block_layer1"), "summary"] and not s.loc[("obj", "logit"), "summary"]


def test_concept_in_the_targets_is_significant() -> None:
    """Quadratic objective |a|^2/2: the derivative a . cav is positive for targets containing the
    concept when cav ~ v, and of either sign along random directions."""
    model = ToyNet(head="quadratic")
    res = run_tcav(_job(model, 200.0, 4.0, num_random=5), [ModelSpec("obj", model, "h", 0, "quadratic")])
    row = res.summary.set_index("layer").loc["block_layer1"]
    assert row["score"] > 0.99 and 0.2 < row["random_score"] < 0.8
    assert row["p_value"] < 0.01 and bool(row["significant"])
    assert row["n_runs"] == 5 and row["n_images"] == 100


def test_random_concept_scores_spread_around_half_and_are_not_significant() -> None:
    model = ToyNet(head="quadratic")
    significant, scores = 0, []
    for seed in range(10):
        res = run_tcav(_job(model, 0.0, 0.0, num_random=5, seed=seed, layers=("block_layer1",)),
                       [ModelSpec("obj", model, "h", 0, "quadratic")])
        row = res.summary.iloc[0]
        significant += bool(row["significant"])
        scores.append(row["score"])
        per_run = res.records[res.records["kind"] == "concept"].groupby("run")["positive"].mean()
        assert ((per_run > 0.3) & (per_run < 0.7)).all()
        assert 0.35 < row["random_cav_accuracy"] < 0.65 and 0.35 < row["cav_accuracy"] < 0.65
    assert abs(np.mean(scores) - 0.5) < 0.05
    assert significant <= 2  # 5 % expected under the null


def test_logit_layer_gives_one_sign_per_run_with_the_logit_gradient() -> None:
    """At ``logit`` the gradient of the target logit is the unit vector e_c: every image gets the
    sign of cav[c] (why ``log_softmax`` is the default); the log-softmax gradient e_c - p varies."""
    model = ToyNet(head="quadratic")
    job = _job(model, 200.0, 4.0, layers=("logit",), gradient="logit")
    cav = _cavs(model, job)["logit"]
    rec = run_tcav(job, [ModelSpec("obj", model, "h", 0, "q")]).records
    for (kind, run), grp in rec.groupby(["kind", "run"]):
        j = run + (2 if kind == "random" else 0)
        np.testing.assert_allclose(grp["derivative"], float(cav[j, 0]), rtol=1e-5)
    model = ToyNet()
    job = _job(model, 3.0, 0.5, layers=("logit",))
    cav = _cavs(model, job)["logit"]
    soft = run_tcav(job, [ModelSpec("obj", model, "h", 1, "anti")]).records
    with torch.no_grad():
        p = torch.softmax(model(job.source.load(job.sets.targets, range(100))).double(), 1)
    for (kind, run), grp in soft.groupby(["kind", "run"]):
        v = cav[run + (2 if kind == "random" else 0)].double()
        np.testing.assert_allclose(grp["derivative"], (v[1] - p @ v).numpy(), rtol=1e-4, atol=1e-9)
    assert soft.groupby(["kind", "run"])["derivative"].nunique().min() == 100


def test_same_inputs_same_records() -> None:
    model = ToyNet(head="quadratic")
    a = run_tcav(_job(model, 5.0, 1.0), [ModelSpec("obj", model, "h", 0, "q")])
    b = run_tcav(_job(model, 5.0, 1.0), [ModelSpec("obj", model, "h", 0, "q")])
    pd.testing.assert_frame_equal(a.records, b.records)
    pd.testing.assert_frame_equal(a.summary, b.summary)
