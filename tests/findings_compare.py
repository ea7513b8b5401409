"""Comparing two audits' findings: identical except for the last digits of summed figures."""

from __future__ import annotations

import math


def same_up_to_summation_order(a: object, b: object) -> bool:
    """Equal, except that numbers may differ in the last digits kept.

    Parts (or Ray workers) sum costs in another order than one pass does, and Polars' parallel
    sums vary from run to run, so a figure rounded to 1e-6 can land on either side of a rounding
    edge: 22.644137 in one run, 22.644138 in the next. Everything else must be identical."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_up_to_summation_order(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(map(same_up_to_summation_order, a, b))
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    numbers = (int, float)
    if (isinstance(a, float) or isinstance(b, float)) and (
        isinstance(a, numbers) and isinstance(b, numbers)
    ):
        return math.isclose(a, b, rel_tol=1e-7, abs_tol=2e-6)
    return a == b
