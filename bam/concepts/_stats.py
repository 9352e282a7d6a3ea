"""The significance test of TCAV: Student's two-sample t-test, two-sided, written out (no scipy).

TCAV (Kim et al. 2018, §3.2; tcav ``utils.print_results``) compares the TCAV scores of the
concept CAVs with those of random-vs-random CAVs by ``scipy.stats.ttest_ind`` (pooled variance).
The degrees of freedom n1 + n2 - 2 are an integer, so the Student t distribution function has a
closed form (Abramowitz & Stegun 26.7.3-4) and no special-function library is needed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def t_two_sided_p(t: float, df: int) -> float:
    """P(|T| >= |t|) for Student's T with ``df`` (>= 1, integer) degrees of freedom."""
    if df < 1 or int(df) != df:
        raise ValueError(f"degrees of freedom {df!r} must be a positive integer")
    if math.isnan(t):
        return math.nan
    if math.isinf(t):
        return 0.0
    theta = math.atan(abs(t) / math.sqrt(df))
    s, c2 = math.sin(theta), math.cos(theta) ** 2
    if df % 2 == 0:
        # A = sin(theta) * (1 + 1/2 cos^2 + (1*3)/(2*4) cos^4 + ... up to cos^(df-2))
        term, total = 1.0, 1.0
        for j in range(1, df // 2):
            term *= c2 * (2 * j - 1) / (2 * j)
            total += term
        a = s * total
    else:
        # A = 2/pi * (theta + sin * (cos + 2/3 cos^3 + ... up to cos^(df-2)))  (df = 1: 2 theta / pi)
        inner = 0.0
        if df > 1:
            term = math.cos(theta)
            inner = term
            for j in range(1, (df - 1) // 2):
                term *= c2 * (2 * j) / (2 * j + 1)
                inner += term
        a = 2.0 / math.pi * (theta + s * inner)
    return min(1.0, max(0.0, 1.0 - a))


def ttest_ind(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """(t, two-sided p) of Student's pooled-variance t-test of mean(a) == mean(b).

    Both samples constant: p = 0 when the means differ (t = +-inf), NaN when they are equal, as
    scipy reports. Fewer than two values in total beyond the two means: (NaN, NaN).
    """
    n1, n2 = len(a), len(b)
    df = n1 + n2 - 2
    if n1 < 1 or n2 < 1 or df < 1:
        return math.nan, math.nan
    m1, m2 = sum(a) / n1, sum(b) / n2
    ss = sum((x - m1) ** 2 for x in a) + sum((x - m2) ** 2 for x in b)
    var = ss / df
    if var == 0.0:
        if m1 == m2:
            return math.nan, math.nan
        return math.copysign(math.inf, m1 - m2), 0.0
    t = (m1 - m2) / math.sqrt(var * (1.0 / n1 + 1.0 / n2))
    return t, t_two_sided_p(t, df)
