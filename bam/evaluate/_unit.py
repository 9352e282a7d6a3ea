"""What the executor owns for one unit of work (one model on one subset/input): see :class:`UnitState`."""

from __future__ import annotations

from torch import nn

from bam.evaluate._guard import ModelGuard
from bam.evaluate.plan import MethodPlan, Unit
from bam.methods._base import MethodFn


class UnitState:
    """What the executor owns for the unit in progress (dropped with it): the isolation guard of its model(s), the
    model-space view, and each method's state prepared for the model (``MethodInfo.prepare``), shared by the
    unit's chunks: nothing module-level remembers models."""

    def __init__(self, unit: Unit) -> None:
        self.unit = unit
        model = unit.model.model.eval()
        self.guards = [ModelGuard(model)]
        self.views: dict[str, nn.Module] = {"pixel": model}
        self.prepared: dict[tuple[str, str], MethodFn] = {}

    def model_for(self, space: str) -> nn.Module:
        """The model a method in ``space`` is called with (the model-space view is guarded too)."""
        if space not in self.views:
            from bam.methods._space import model_space

            view = model_space(self.unit.model.model)
            self.views[space] = view
            self.guards.append(ModelGuard(view, covered=self.guards[0]))
        return self.views[space]

    def method_fn(self, method: MethodPlan) -> MethodFn:
        """The method as called on this unit's model: prepared for it once, or the registered function."""
        key = (method.name, method.space)
        if key not in self.prepared:
            from bam.methods import resolve_method

            fn, info = resolve_method(method.name)
            model = self.model_for(method.space)
            self.prepared[key] = info.prepare(model) if info.prepare is not None and info.uses_model else fn
        return self.prepared[key]
