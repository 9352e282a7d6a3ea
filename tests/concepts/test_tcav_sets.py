"""Concept/random/target sets drawn from a real tiny build: splits, disjointness, determinism, bad input."""

from __future__ import annotations

from pathlib import Path

import pytest

from bam.concepts import ConceptSets, ImageSet, TcavConfig, build_concept_sets, sets_table
from bam.data import open_dataset
from bam.errors import BamError


def test_val_sets_leave_out_the_common_scene(tiny_dir: Path) -> None:
    data = open_dataset(tiny_dir)
    cfg = TcavConfig(concept_size=6, random_size=2, num_random=2, split="val")
    sets = build_concept_sets(data, cfg)
    assert [s.name for s in sets.all_sets] == ["circle_scene", "random500_0", "random500_1", "random_counter_part",
                                               "circle_checker"]
    obj = data.subset("obj", "val").table.set_index("image_id")
    concept = obj.loc[list(sets.concept.image_ids)]
    assert (concept["object"] == "circle").all() and (concept["scene"] != "checker").all()
    assert len(concept) == 6  # every circle composite on the two other scenes' 3 val images
    so = data.subset("scene_only", "val").table.set_index("image_id")
    picked = [so.loc[list(s.image_ids)] for s in (*sets.randoms, sets.counterpart)]
    scenes = [(r, i) for p in picked for r, i in zip(p["scene"], p["instance"])]
    assert len(set(scenes)) == len(scenes) == 6  # distinct scene images across all random sets
    assert all((p["scene"] != "checker").all() for p in picked)
    targets = data.subset("common_in_scene", "val").table
    assert sorted(sets.targets.image_ids) == sorted(targets["image_id"])
    assert build_concept_sets(data, cfg) == sets  # deterministic
    table = sets_table(sets)
    assert len(table) == 6 + 2 * 3 + 3 and set(table["kind"]) == {"concept", "random", "counterpart", "target"}
    assert sets.describe()["circle_scene"]["sha256"] == sets.concept.content_hash


def test_train_sets_cover_every_scene_and_no_target_pixel(tiny_dir: Path) -> None:
    data = open_dataset(tiny_dir)
    cfg = TcavConfig(concept_size=27, random_size=9, num_random=2)
    sets = build_concept_sets(data, cfg)
    assert sets.concept.split == "train" and {s.split for s in sets.randoms} == {"train"}
    obj = data.subset("obj", "train").table.set_index("image_id").loc[list(sets.concept.image_ids)]
    assert (obj["object"] == "circle").all() and obj["scene"].value_counts().to_dict() == {
        "checker": 9, "gradient": 9, "stripes": 9}  # every train circle composite, all scenes
    so = data.subset("scene_only", "train").table.set_index("image_id")
    rows = so.loc[[i for s in (*sets.randoms, sets.counterpart) for i in s.image_ids]]
    assert len(set(zip(rows["scene"], rows["instance"]))) == 27  # every train scene image once
    val = data.subset("common_in_scene", "val").table
    train_instances = set(rows["instance"]) | set(obj["instance"])
    assert not train_instances & set(val["instance"])  # neither the targets' scene images nor objects


def test_train_split_and_target_limit(tiny_dir: Path) -> None:
    data = open_dataset(tiny_dir)
    sets = build_concept_sets(data, TcavConfig(concept_size=10, random_size=5, split="train", target_images=2))
    assert len(sets.concept) == 10 and len(sets.targets) == 2
    full = build_concept_sets(data, TcavConfig(concept_size=10, random_size=5, split="train", target_images=None))
    assert full.targets.image_ids[:2] == sets.targets.image_ids  # a smaller limit is a prefix
    other = build_concept_sets(data, TcavConfig(concept_size=10, random_size=5, split="train", seed=1))
    assert set(other.concept.image_ids) != set(sets.concept.image_ids) and other.randoms != sets.randoms
    assert full.concept == sets.concept  # the target limit does not redraw the other sets


def test_too_few_images_say_how_many_were_found(tiny_dir: Path) -> None:
    data = open_dataset(tiny_dir)
    with pytest.raises(BamError, match=r"too few concept images \(circle composites, train split\): found 27, "
                                       r"need 100; accepted: a smaller tcav concept_size \(at most 27 images in all\)"):
        build_concept_sets(data, TcavConfig())
    with pytest.raises(BamError, match=r"too few concept images \(circle composites, val split, scenes other than "
                                       r"checker\): found 6, need 100"):
        build_concept_sets(data, TcavConfig(split="val"))
    with pytest.raises(BamError, match=r"too few random images .* found 6, need 9"):
        build_concept_sets(data, TcavConfig(concept_size=4, random_size=3, split="val"))


def _set(name: str, ids: list[str], subset: str = "scene_only") -> ImageSet:
    return ImageSet(name, subset, "val", tuple(ids), "m")


def test_bad_sets_are_refused() -> None:
    r0, r1, cp = _set("random500_0", ["a", "b"]), _set("random500_1", ["c", "d"]), _set("cp", ["e", "f"])
    targets = _set("t", ["x", "y"], "common_in_scene")
    with pytest.raises(BamError, match="concept set 'dog' has the same 2 images as random set 'random500_1'"):
        ConceptSets(_set("dog", ["d", "c"]), (r0, r1), cp, targets)
    with pytest.raises(BamError, match="random sets 'random500_0' and 'cp' share 1 image"):
        ConceptSets(_set("dog", ["g", "h"], "obj"), (r0, r1), _set("cp", ["a", "z"]), targets)
    with pytest.raises(BamError, match="set 'dog' contains 1 target image"):
        ConceptSets(_set("dog", ["x", "h"], "obj"), (r0, r1), cp, targets)
    with pytest.raises(BamError, match="needs >= 2 random sets"):
        ConceptSets(_set("dog", ["g", "h"], "obj"), (r0,), cp, targets)
    with pytest.raises(BamError, match="set 'dog' has 1 image"):
        ConceptSets(_set("dog", ["g"], "obj"), (r0, r1), cp, targets)


def test_config_validation() -> None:
    with pytest.raises(BamError, match="num_random=1 is invalid"):
        TcavConfig(num_random=1)
    with pytest.raises(BamError, match="gradient='loss' is invalid; accepted: log_softmax, logit"):
        TcavConfig(gradient="loss")
    with pytest.raises(BamError, match="summary_layer 'block_layer9' is not among layers"):
        TcavConfig(layers=("block_layer1",), summary_layer="block_layer9")
    with pytest.raises(BamError, match=r"alpha=0.0 is invalid; accepted: a number > 0"):
        TcavConfig(alpha=0)
    with pytest.raises(BamError, match=r"seed=-1 is invalid; accepted: an integer >= 0"):
        TcavConfig(seed=-1)
