"""Trainer: learning, resume equality, resume checks, augmentation, schedule, roles."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from bam.errors import BamError
from bam.models import load
from bam.train import TrainConfig, check_role, fit, role_names, train_model
from bam.train._data import _translate, augment, train_batches
from bam.train.trainer import lr_at

TINY = TrainConfig(arch="small_resnet", arch_kwargs={"widths": [8, 16, 32]}, epochs=2, batch_size=16, lr=0.05,
                   warmup_epochs=0.0, max_shift=2)


def test_training_improves_accuracy_on_fake_data(tmp_path: Path, fake_data) -> None:  # type: ignore[no-untyped-def]
    cfg = TINY.replace(epochs=4)
    card = fit(cfg, fake_data, tmp_path / "obj", "obj", device="cpu")
    history = torch.load(tmp_path / "obj" / "train_state.pt", weights_only=True)["history"]
    assert history[-1]["loss"] < history[0]["loss"]
    assert card.accuracy["val"] >= 0.9  # 3 colour-coded object classes: chance is 1/3
    # the object model cannot read the object from an image without it: near chance
    assert card.accuracy["val_scene_only"] <= 0.6
    assert card.class_names == ("o0", "o1", "o2") and card.role == "obj" and card.recipe == "fake"
    model = load(tmp_path / "obj")
    assert model.card.weights_sha256 == card.weights_sha256
    assert (tmp_path / "obj" / "config.yaml").is_file()


def test_training_on_real_tiny_dataset(tmp_path: Path, tiny_data_dir: Path) -> None:
    from bam.data import open_dataset

    data = open_dataset(tiny_data_dir)
    cfg = TINY.replace(epochs=3, select="last")
    card = train_model(cfg, tiny_data_dir, tmp_path / "scene", "scene", device="cpu")
    assert card.dataset_manifest_hash == data.manifest_hash
    assert card.recipe == "tiny" and card.num_classes == len(data.scene_classes)
    assert set(card.accuracy) == {"val", "train", "val_scene_only"}
    state = torch.load(tmp_path / "scene" / "train_state.pt", weights_only=True)
    assert state["history"][-1]["loss"] < state["history"][0]["loss"]
    assert abs(state["history"][-1]["val_acc"] - card.accuracy["val"]) < 1e-9  # select=last: same weights


def test_resume_equals_uninterrupted_run(tmp_path: Path, fake_data, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import bam.train.trainer as trainer

    straight = fit(TINY, fake_data, tmp_path / "a", "scene", device="cpu")
    real_save = trainer.save_state

    def save_then_die(out_dir: Path, state: dict) -> None:
        real_save(out_dir, state)
        if state["epoch"] == 1:
            raise KeyboardInterrupt  # killed right after epoch 1 was written

    monkeypatch.setattr(trainer, "save_state", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        fit(TINY, fake_data, tmp_path / "b", "scene", device="cpu")
    monkeypatch.setattr(trainer, "save_state", real_save)
    assert not (tmp_path / "b" / "card.json").exists()
    resumed = fit(TINY, fake_data, tmp_path / "b", "scene", device="cpu")
    wa = torch.load(tmp_path / "a" / "train_state.pt", weights_only=True)
    wb = torch.load(tmp_path / "b" / "train_state.pt", weights_only=True)
    for k, v in wa["model"].items():
        assert torch.equal(v, wb["model"][k]), k
    fa, fb = load_file(str(tmp_path / "a" / "model.safetensors")), load_file(str(tmp_path / "b" / "model.safetensors"))
    assert all(torch.equal(fa[k], fb[k]) for k in fa)
    assert resumed.weights_sha256 == straight.weights_sha256
    assert resumed.accuracy == straight.accuracy


def test_card_val_is_the_selected_epochs_and_cpu_channels_last(tmp_path: Path, fake_data,  # type: ignore[no-untyped-def]
                                                                 monkeypatch) -> None:
    """The card's val accuracy is the selected epoch's (not measured twice), and the same when measured
    again on the reloaded checkpoint; cpu_channels_last trains on channels_last batches."""
    import bam.train._loop as loop

    formats: list[bool] = []
    real_prep = loop.prep

    def prep(x: torch.Tensor, run: loop.TrainRun) -> torch.Tensor:
        out = real_prep(x, run)
        formats.append(out.is_contiguous(memory_format=torch.channels_last) and not out.is_contiguous())
        return out

    monkeypatch.setattr(loop, "prep", prep)
    card = fit(TINY.replace(epochs=3, cpu_channels_last=True), fake_data, tmp_path / "m", "obj", device="cpu")
    assert formats and all(formats)
    history = torch.load(tmp_path / "m" / "train_state.pt", weights_only=True)["history"]
    assert card.accuracy["val"] == max(h["val_acc"] for h in history) >= 0.9
    from bam.train._data import SplitLoader, eval_batches

    model = load(tmp_path / "m")  # contiguous weights, eval mode
    sub = fake_data.subset("obj", split="val")
    correct = 0
    with torch.no_grad():
        for x, y in SplitLoader(sub).batches(eval_batches(list(range(len(sub))), TINY.eval_batch_size)):
            correct += int((model(x).argmax(1) == y).sum())
    assert correct / len(sub) == card.accuracy["val"]
    formats.clear()
    fit(TINY.replace(epochs=1), fake_data, tmp_path / "c", "obj", device="cpu")
    assert formats and not any(formats)  # off by default on CPU


def test_resume_with_different_settings_is_an_error(tmp_path: Path, fake_data) -> None:  # type: ignore[no-untyped-def]
    fit(TINY.replace(epochs=1), fake_data, tmp_path / "m", "obj", device="cpu")
    with pytest.raises(BamError, match=r"setting 'lr' differs \(checkpoint 0.05, now 0.01\)"):
        fit(TINY.replace(epochs=1, lr=0.01), fake_data, tmp_path / "m", "obj", device="cpu")
    with pytest.raises(BamError, match="setting 'role' differs"):
        fit(TINY.replace(epochs=1), fake_data, tmp_path / "m", "scene", device="cpu")
    # a finished run with identical settings is returned without training; workers may differ
    card = json.loads((tmp_path / "m" / "card.json").read_text())
    again = fit(TINY.replace(epochs=1, workers=1), fake_data, tmp_path / "m", "obj", device="cpu")
    assert again.weights_sha256 == card["weights_sha256"]


def test_resume_with_another_thread_count_is_refused(tmp_path: Path, fake_data,  # type: ignore[no-untyped-def]
                                                     monkeypatch) -> None:
    """The thread count orders float reductions: a resumed run in another one would not match a straight run."""
    import bam.train.trainer as trainer

    real_save = trainer.save_state

    def save_then_die(out_dir: Path, state: dict) -> None:
        real_save(out_dir, state)
        raise KeyboardInterrupt

    monkeypatch.setattr(trainer, "save_state", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        fit(TINY, fake_data, tmp_path / "t", "scene", device="cpu")
    monkeypatch.setattr(trainer, "save_state", real_save)
    state = torch.load(tmp_path / "t" / "train_state.pt", weights_only=True)
    assert state["environment"] == {"intra_op_threads": torch.get_num_threads(),
                                    "cpu_capability": torch.backends.cpu.get_cpu_capability()}
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(threads + 1)
        with pytest.raises(BamError, match=rf"intra_op_threads {threads}.*OMP_NUM_THREADS={threads}") as exc:
            fit(TINY, fake_data, tmp_path / "t", "scene", device="cpu")
        assert "\n" not in str(exc.value)
    finally:
        torch.set_num_threads(threads)
    card = fit(TINY, fake_data, tmp_path / "t", "scene", device="cpu")  # the same thread count resumes
    assert card.accuracy["val"] >= 0


def test_same_seed_same_weights_other_seed_differs(tmp_path: Path, fake_data) -> None:  # type: ignore[no-untyped-def]
    cfg = TINY.replace(epochs=1)
    a = fit(cfg, fake_data, tmp_path / "a", "obj", device="cpu")
    b = fit(cfg, fake_data, tmp_path / "b", "obj", device="cpu")
    c = fit(cfg.replace(seed=1), fake_data, tmp_path / "c", "obj", device="cpu")
    assert a.weights_sha256 == b.weights_sha256 != c.weights_sha256


def test_roles_and_missing_role_data(tmp_path: Path, fake_data) -> None:  # type: ignore[no-untyped-def]
    from _fake_data import FakeData

    assert check_role("commonality_2", 3) == "commonality-2"
    assert role_names(2) == ["obj", "scene", "scene_only", "commonality-1", "commonality-2"]
    with pytest.raises(BamError, match=r"unknown role 'commonality-4'; accepted: obj, scene, scene_only, "
                                       r"commonality-1..commonality-3"):
        fit(TINY, fake_data, tmp_path / "x", "commonality-4", device="cpu")
    with pytest.raises(BamError, match="unknown role 'objects'"):
        check_role("objects")
    no_scene_only = FakeData(instances=6, val=2, omit=("scene_only",))
    with pytest.raises(BamError, match="has no train data for role 'scene_only'"):
        fit(TINY, no_scene_only, tmp_path / "y", "scene_only", device="cpu")


def test_commonality_role_trains_with_probe(tmp_path: Path, fake_data) -> None:  # type: ignore[no-untyped-def]
    card = fit(TINY.replace(epochs=1, batch_size=8), fake_data, tmp_path / "c", "commonality-1", device="cpu")
    assert card.role == "commonality-1" and set(card.accuracy) == {"val", "train", "val_common_in_scene"}


def test_augment_flips_image_and_mask_together() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(64, 3, 5, 7)
    m = (x[:, :1] > 0.5).float()
    ax, am = augment(x, m, g, hflip=True, max_shift=0)
    flipped = (ax != x).flatten(1).any(1)
    assert 10 < int(flipped.sum()) < 54  # about half
    torch.testing.assert_close(ax[flipped], x[flipped].flip(-1))
    torch.testing.assert_close(am[flipped], m[flipped].flip(-1))
    torch.testing.assert_close(ax[~flipped], x[~flipped])
    # same generator seed -> same augmentation
    bx, _ = augment(x, m, torch.Generator().manual_seed(0), hflip=True, max_shift=0)
    assert torch.equal(ax, bx)


def test_translate_matches_reference_loop() -> None:
    x = torch.rand(6, 2, 5, 7)
    shifts = torch.tensor([[0, 0], [1, -2], [-3, 2], [2, 3], [-1, -1], [3, -3]])
    out = _translate(x, shifts)
    for i, (dy, dx) in enumerate(shifts.tolist()):
        ref = torch.zeros_like(x[i])
        for yy in range(5):
            for xx in range(7):
                sy, sx = yy - dy, xx - dx
                if 0 <= sy < 5 and 0 <= sx < 7:
                    ref[:, yy, xx] = x[i, :, sy, sx]
        torch.testing.assert_close(out[i], ref)


def test_lr_schedule_known_values() -> None:
    cfg = TrainConfig(lr=1.0, epochs=4, warmup_epochs=1.0)
    lrs = [lr_at(cfg, s, total_steps=40, steps_per_epoch=10) for s in range(40)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert lrs[10] == pytest.approx(1.0)
    assert lrs[25] == pytest.approx(0.5)  # half way through the cosine part
    assert lrs[39] == pytest.approx(0.5 * (1 + math.cos(29 / 30 * math.pi)))
    assert lr_at(cfg.replace(schedule="constant"), 30, 40, 10) == 1.0


def test_train_batches_cover_the_data_and_shard() -> None:
    one = train_batches(50, 8, seed=0, epoch=0)
    assert len(one) == 6 and len({i for b in one for i in b}) == 48  # last partial batch dropped
    assert train_batches(50, 8, seed=0, epoch=0) == one != train_batches(50, 8, seed=0, epoch=1)
    r0 = train_batches(50, 8, seed=0, epoch=0, rank=0, world=2)
    r1 = train_batches(50, 8, seed=0, epoch=0, rank=1, world=2)
    assert len(r0) == len(r1) == 3
    assert not ({i for b in r0 for i in b} & {i for b in r1 for i in b})
    assert train_batches(5, 8, seed=0, epoch=0) != []  # fewer images than a batch: one short batch


def test_config_validation() -> None:
    with pytest.raises(BamError, match="epochs=0 is invalid"):
        TrainConfig(epochs=0)
    with pytest.raises(BamError, match="unknown train config optimizer 'adam'; accepted: adamw, sgd"):
        TrainConfig(optimizer="adam")


def test_pool_workers_train_the_same_weights_as_one_process(tmp_path: Path, tiny_data_dir: Path) -> None:
    """bam run trains models in single-threaded worker processes: the same weights as one thread here."""
    import yaml

    from bam.train.pool import Job, train_all

    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"arch": "small_resnet", "arch_kwargs": {"widths": [8, 8, 8]}, "epochs": 1,
                                   "batch_size": 32, "lr": 0.01}))
    jobs = [Job(str(cfg), role, tmp_path / "pool" / role, 0) for role in ("obj", "scene")]
    seen: list[str] = []
    pooled = train_all(jobs, tiny_data_dir, device="cpu", workers=2, on_done=lambda d: seen.append(d.job.role))
    assert sorted(seen) == ["obj", "scene"] and [d.job.role for d in pooled] == ["obj", "scene"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        alone = train_all([Job(str(cfg), "obj", tmp_path / "alone", 0)], tiny_data_dir, device="cpu", workers=1)
    finally:
        torch.set_num_threads(threads)
    card = json.loads((tmp_path / "pool" / "obj" / "card.json").read_text())
    assert card["weights_sha256"] == json.loads((tmp_path / "alone" / "card.json").read_text())["weights_sha256"]
    assert alone[0].val_accuracy == pooled[0].val_accuracy
