"""Every built-in method's outputs on a fixed tiny model are pinned to its version (issue 23).

The record cache is keyed on ``MethodInfo.version``: a change of a built-in's computation must bump
it, or a re-run silently returns the old records. This test runs each shipped method (registry-driven)
in float64 on a fixed tiny model and batch, rounds the outputs and hashes them, and compares the hash
with the committed table ``method_fingerprints.json`` of (method, version, fingerprint). A new
method, or a changed output, fails with the line to put in the table.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import bam.models as models
from bam.methods import METHODS, attribute_full, get_info, list_methods

TABLE = Path(__file__).with_name("method_fingerprints.json")
IMAGE_SIZE = 16
#: significant digits kept before hashing (float64 on CPU: far above the float error, far below any real change)
DIGITS = 6


def _shipped() -> list[str]:
    """Every method bam ships (registered from bam.methods)."""
    return [n for n in list_methods() if METHODS.get(n).__module__.startswith("bam.methods.")]


def _params(name: str) -> dict[str, Any]:
    """Defaults with every step/sample/iteration count cut to at most 3 (fixed: part of the fingerprint)."""
    out: dict[str, Any] = {}
    for key, value in get_info(name).defaults.items():
        if isinstance(value, int) and not isinstance(value, bool) and key.endswith(("steps", "samples", "iters")):
            out[key] = min(value, 3)
    if get_info(name).stochastic:
        out["seed"] = 7
    return out


def _round(t: torch.Tensor) -> np.ndarray:
    """Values rounded to DIGITS significant digits relative to the tensor's largest magnitude (-0 -> 0)."""
    a = t.detach().double().cpu().numpy()
    finite = a[np.isfinite(a)]
    scale = float(np.abs(finite).max()) if finite.size else 1.0
    scale = 10.0 ** np.floor(np.log10(scale)) if scale > 0 else 1.0
    return np.round(a / scale, DIGITS) * scale + 0.0


def fingerprint(name: str) -> str:
    """sha256[:16] of the method's rounded attributions, validity and extras on the fixed model and batch."""
    arch = "irevnet" if "invertible" in get_info(name).requires else "small_resnet"
    torch.manual_seed(0)
    model = models.create_model(arch, num_classes=3, image_size=IMAGE_SIZE).double().eval()
    gen = torch.Generator().manual_seed(4)
    x = torch.rand(2, 3, IMAGE_SIZE, IMAGE_SIZE, generator=gen, dtype=torch.float64)
    res = attribute_full(name, model, x, torch.tensor([0, 2]), **_params(name))
    h = hashlib.sha256()
    h.update(_round(res.attributions).tobytes())
    h.update(bytes(res.valid.cpu().numpy().astype(np.uint8)))
    for k in sorted(res.extras):
        h.update(k.encode())
        h.update(_round(res.extras[k]).tobytes())
    return h.hexdigest()[:16]


def _table() -> dict[str, dict[str, Any]]:
    return {row["method"]: row for row in json.loads(TABLE.read_text())}


@pytest.mark.parametrize("name", _shipped())
def test_method_output_is_pinned_to_its_version(name: str) -> None:
    table = _table()
    version = get_info(name).version
    got = fingerprint(name)
    line = json.dumps({"method": name, "version": version, "fingerprint": got})
    assert name in table, (f"built-in method {name!r} has no fingerprint entry: add {line} to {TABLE.name} "
                           "(tests/methods)")
    row = table[name]
    if row["version"] == version:
        assert row["fingerprint"] == got, (
            f"method {name!r} computes other outputs than version {version} did: if the change is intended, bump "
            f"its MethodInfo.version to {version + 1} (so cached records are recomputed) and set its entry in "
            f"{TABLE.name} to {json.dumps({'method': name, 'version': version + 1, 'fingerprint': got})}")
    else:
        assert row["version"] < version, f"{TABLE.name} has version {row['version']} for {name!r}, bam {version}"
        pytest.fail(f"method {name!r} is version {version} but {TABLE.name} pins version {row['version']}: "
                    f"set its entry to {line}")


def test_the_table_names_only_shipped_methods() -> None:
    stale = sorted(set(_table()) - set(_shipped()))
    assert not stale, f"{TABLE.name} has entries for methods bam no longer ships: {', '.join(stale)}; remove them"


def test_a_changed_output_changes_the_fingerprint(monkeypatch: pytest.MonkeyPatch) -> None:
    """A 0.1 % change of gradient's maps (far above the rounding) is seen."""
    before = fingerprint("gradient")
    fn = METHODS.get("gradient")
    monkeypatch.setitem(METHODS._entries, "gradient", lambda *a, **k: fn(*a, **k) * 1.001)
    assert fingerprint("gradient") != before
