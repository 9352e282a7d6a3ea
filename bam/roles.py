"""Model roles (SPEC §3): the one place that spells them.

A role names what a model was trained on and, by the data contract, the subset it trains on:
``obj``, ``scene``, ``scene_only`` and ``commonality-k`` for k = 1..K (K = number of scene
classes; the common object is informative for k = 1 and carries less information as k grows).

>>> commonality(3)
'commonality-3'
>>> commonality_k("commonality-3"), commonality_k("obj")
(3, None)
"""

from __future__ import annotations

import re

from bam.errors import BamError

OBJ = "obj"
SCENE = "scene"
SCENE_ONLY = "scene_only"
#: The roles every dataset has, in protocol order.
BASE_ROLES: tuple[str, ...] = (OBJ, SCENE, SCENE_ONLY)

_COMMONALITY = re.compile(r"^commonality[-_](\d+)$")


def commonality(k: int) -> str:
    """The role (and subset) name of the k-commonality model: ``commonality-k``."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise BamError(f"commonality k={k!r} is invalid; accepted: an integer >= 1")
    return f"commonality-{k}"


def commonality_k(role: str) -> int | None:
    """k of a ``commonality-k`` role (``commonality_k`` accepted too), else None."""
    m = _COMMONALITY.match(str(role))
    return int(m.group(1)) if m else None


def commonality_roles(num_k: int) -> tuple[str, ...]:
    """``commonality-1`` .. ``commonality-K``."""
    return tuple(commonality(k) for k in range(1, num_k + 1))


def all_roles(num_k: int) -> tuple[str, ...]:
    """Every role of a dataset with ``num_k`` scene classes, in protocol order."""
    return (*BASE_ROLES, *commonality_roles(num_k))


def role_names(num_k: int | None = None) -> list[str]:
    """Valid roles for messages (``commonality-1..commonality-K`` spelled as a range when K is unknown)."""
    if num_k is None:
        return [*BASE_ROLES, "commonality-1..commonality-K"]
    return list(all_roles(num_k))


def check_role(role: str, num_k: int | None = None) -> str:
    """Canonical role name (``commonality_3`` -> ``commonality-3``); BamError listing the valid roles."""
    if role in BASE_ROLES:
        return role
    k = commonality_k(role)
    if k is not None and k >= 1 and (num_k is None or k <= num_k):
        return commonality(k)
    top = "K" if num_k is None else str(num_k)
    raise BamError(f"unknown role {role!r}; accepted: {', '.join(BASE_ROLES)}, commonality-1..commonality-{top}")
