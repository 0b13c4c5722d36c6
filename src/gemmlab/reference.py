"""The float64 reference every result is checked against, with an error bound that scales with k.

A dot product of length k computed in floating point is off by at most about k * eps * sum|a_i b_i|
(the classic bound for recursive summation; blocked and pairwise sums do better). The bound is
applied element by element, so a wrong element cannot hide behind a large one elsewhere.

The same bound serves every floating dtype a backend takes: eps is the operands' (float16 and
bfloat16 included, whether the kernel accumulates in them or wider and rounds once), and complex
operands are checked against a complex128 reference with |a_i| |b_i| the moduli (a complex
multiply-add is off by a few eps, which the factor 2 in 2k + 2 covers).
"""

from __future__ import annotations

import math

import torch


def _wide(x: torch.Tensor) -> torch.Tensor:
    """x on the CPU in float64, or complex128 if it is complex (.double() would drop the imaginary part)."""
    x = torch.as_tensor(x).detach().cpu()
    return x.to(torch.complex128 if x.is_complex() else torch.float64)


def reference(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """torch.matmul(a, b) computed in float64 (complex128 for complex operands) on the CPU."""
    return torch.matmul(_wide(a), _wide(b))


class Reference:
    """The float64 reference of a @ b and each element's allowed error, computed once, for checking
    several results of the same product (a benchmark checks every backend's)."""

    def __init__(self, a: torch.Tensor, b: torch.Tensor) -> None:
        self.expected = reference(a, b)
        eps = torch.finfo(a.dtype).eps
        scale = torch.matmul(_wide(a).abs(), _wide(b).abs())
        self.bound = (2 * a.shape[-1] + 2) * eps * scale + torch.finfo(torch.float64).tiny

    def error_ratio(self, result: torch.Tensor) -> float:
        """Largest |result - reference| as a fraction of its element's bound; <= 1 means correct."""
        got = _wide(torch.as_tensor(result))
        if got.shape != self.expected.shape:
            raise AssertionError(f"result has shape {tuple(got.shape)}, expected {tuple(self.expected.shape)}")
        if got.numel() == 0:
            return 0.0
        return float(((got - self.expected).abs() / self.bound).max())


def error_ratio(result: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest |result - reference| as a fraction of its element's bound; <= 1 means correct."""
    return Reference(a, b).error_ratio(result)


def assert_close_to_reference(result: torch.Tensor, a: torch.Tensor, b: torch.Tensor, what: str = "result") -> None:
    ratio = error_ratio(result, a, b)
    if not ratio <= 1.0:  # also catches NaN
        raise AssertionError(
            f"{what} differs from the float64 reference by {ratio:.3g} times the allowed error "
            f"(a {tuple(a.shape)}, b {tuple(b.shape)}, {a.dtype})"
        )


def exact_integers(dtype: torch.dtype) -> int:
    """2 ** (significand bits): every integer up to this in magnitude is exact in dtype."""
    return 2 ** (round(-math.log2(torch.finfo(dtype).eps)) + 1)


def assert_exact(result: torch.Tensor, a: torch.Tensor, b: torch.Tensor, what: str = "result") -> None:
    """result must equal a @ b exactly: a and b hold integers small enough that every partial sum
    of every dot product, in whatever order a kernel adds them, is an integer the dtype holds.

    Where that is so, rounding cannot hide a mistake behind the k-scaled bound: a kernel that drops,
    repeats or misplaces a single product is caught."""
    if a.dtype.is_complex or not a.dtype.is_floating_point:
        raise TypeError(f"assert_exact takes real floating operands; got {a.dtype}")
    wide_a, wide_b = _wide(a), _wide(b)
    if not (torch.equal(wide_a, wide_a.round()) and torch.equal(wide_b, wide_b.round())):
        raise ValueError(f"assert_exact needs integer-valued operands ({what})")
    def largest(x):
        return float(x.abs().max()) if x.numel() else 0.0

    largest_sum = a.shape[-1] * largest(wide_a) * largest(wide_b)
    if largest_sum > exact_integers(a.dtype):
        raise ValueError(f"assert_exact: partial sums up to {largest_sum:g} are not all exact in {a.dtype} ({what})")
    expected = reference(a, b)
    got = _wide(torch.as_tensor(result))
    if got.shape != expected.shape:
        raise AssertionError(f"{what} has shape {tuple(got.shape)}, expected {tuple(expected.shape)}")
    wrong = got != expected  # NaN included
    if wrong.any():
        first = tuple(int(i) for i in wrong.nonzero()[0])
        raise AssertionError(
            f"{what} is not exact: {int(wrong.sum())} of {wrong.numel()} elements differ from the integer product, "
            f"e.g. at {first}: {got[first].item()} instead of {expected[first].item()} "
            f"(a {tuple(a.shape)}, b {tuple(b.shape)}, {a.dtype})"
        )
