"""Typed method parameters: one frozen dataclass per built-in method, loaded like every config."""

from __future__ import annotations

import dataclasses
import inspect

import pytest
import torch

from bam.config import Validated, checked, from_dict, one_of
from bam.errors import BamError
from bam.methods import METHODS, attribute, get_info, list_methods, resolve_params


def _builtins() -> list[str]:
    """Methods defined in the package (tests register their own fakes too)."""
    return [n for n in list_methods() if getattr(METHODS.get(n), "__module__", "").startswith("bam.methods.")]


@pytest.mark.parametrize("name", _builtins())
def test_builtin_method_has_a_frozen_validated_parameter_dataclass(name: str) -> None:
    info = get_info(name)
    assert info.params is not None and issubclass(info.params, Validated)
    assert dataclasses.is_dataclass(info.params) and info.params.__dataclass_params__.frozen  # type: ignore[attr-defined]
    assert dict(info.defaults) == {f.name: f.default for f in dataclasses.fields(info.params)}
    # a keyword of the function defaults to the dataclass's value (declared once)
    sig = inspect.signature(METHODS.get(name))
    for key, default in info.defaults.items():
        if key in sig.parameters:
            assert sig.parameters[key].default == default, (name, key)


def test_config_flag_and_python_call_give_the_same_error() -> None:
    info = get_info("smoothgrad")
    with pytest.raises(BamError) as from_config:
        resolve_params(info, {"samples": 0})
    with pytest.raises(BamError) as from_call:
        attribute("smoothgrad", torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 2)),
                  torch.rand(1, 3, 2, 2), 0, samples=0)
    assert str(from_config.value) == str(from_call.value) == \
        "method 'smoothgrad': samples=0 is invalid; accepted: an integer >= 1"
    with pytest.raises(BamError, match=r"method 'smoothgrad': config samples: expected an integer, got 2.5"):
        resolve_params(info, {"samples": 2.5})
    with pytest.raises(BamError, match=r"unknown parameter\(s\) sample for method 'smoothgrad'"):
        resolve_params(info, {"sample": 3})


def test_resolved_params_keep_the_defaults_order_and_pass_call_params_through() -> None:
    resolved = resolve_params(get_info("ig_smoothgrad"), {"steps": 4, "seed": 3, "micro_batch": 8})
    assert list(resolved) == ["samples", "steps", "noise_level", "baseline", "seed", "micro_batch"]
    assert resolved["steps"] == 4 and resolved["baseline"] == 0.0 and isinstance(resolved["baseline"], float)
    assert resolve_params(get_info("integrated_gradients"), {"baseline": 0})["baseline"] == 0.0  # typed: a float


@dataclasses.dataclass(frozen=True)
class _Demo(Validated):
    n: int = checked(3, ge=1)
    p: float = checked(0.5, gt=0, le=1, note="a probability")
    frac: float = checked(0.1, ge=0, lt=1)
    mode: str = one_of("a", ("a", "b"))
    k: int | None = checked(None, ge=2, note="or null")


@pytest.mark.parametrize("bad, message", [
    ({"n": 0}, "n=0 is invalid; accepted: an integer >= 1"),
    ({"p": 0}, "p=0.0 is invalid; accepted: a number in (0, 1] (a probability)"),
    ({"frac": 1.0}, "frac=1.0 is invalid; accepted: a number in [0, 1)"),
    ({"mode": "c"}, "mode='c' is invalid; accepted: a, b"),
    ({"k": 1}, "k=1 is invalid; accepted: an integer >= 2 (or null)"),
    ({"n": True}, "config n: expected an integer, got True"),
])
def test_declared_checks_known_messages(bad: dict, message: str) -> None:
    with pytest.raises(BamError) as direct:
        _Demo(**bad)
    with pytest.raises(BamError) as loaded:
        from_dict(_Demo, bad)
    assert str(direct.value) == message
    assert message.split(": ", 1)[-1] in str(loaded.value)


def test_checked_fields_coerce_like_the_loader() -> None:
    d = _Demo(p=1, k=None)
    assert d.p == 1.0 and isinstance(d.p, float) and d.k is None
