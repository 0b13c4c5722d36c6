"""The float64 reference every result is checked against, with an error bound that scales with k.

A dot product of length k computed in floating point is off by at most about k * eps * sum|a_i b_i|
(the classic bound for recursive summation; blocked and pairwise sums do better). The bound is
applied element by element, so a wrong element cannot hide behind a large one elsewhere. Complex
operands are compared in complex128 (the bound's k * eps * sum|a_i||b_i| holds for them too, with
the constant's slack covering the few roundings of each complex multiply).
"""

from __future__ import annotations

import torch


def _wide(x: torch.Tensor) -> torch.Tensor:
    """x on the CPU in float64, or complex128 if it is complex (.double() would drop the imaginary part)."""
    x = torch.as_tensor(x).detach().cpu()
    return x.to(torch.complex128 if x.is_complex() else torch.float64)


def reference(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """torch.matmul(a, b) computed in float64 (complex128 for complex operands) on the CPU."""
    return torch.matmul(_wide(a), _wide(b))


def error_ratio(result: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest |result - reference| as a fraction of its element's bound; <= 1 means correct."""
    expected = reference(a, b)
    got = _wide(result)
    if got.shape != expected.shape:
        raise AssertionError(f"result has shape {tuple(got.shape)}, expected {tuple(expected.shape)}")
    if got.numel() == 0:
        return 0.0
    k = a.shape[-1]
    eps = torch.finfo(a.dtype).eps
    scale = torch.matmul(_wide(a).abs(), _wide(b).abs())
    bound = (2 * k + 2) * eps * scale + torch.finfo(torch.float64).tiny
    return float(((got - expected).abs() / bound).max())


def assert_close_to_reference(result: torch.Tensor, a: torch.Tensor, b: torch.Tensor, what: str = "result") -> None:
    ratio = error_ratio(result, a, b)
    if not ratio <= 1.0:  # also catches NaN
        raise AssertionError(
            f"{what} differs from the float64 reference by {ratio:.3g} times the allowed error "
            f"(a {tuple(a.shape)}, b {tuple(b.shape)}, {a.dtype})"
        )
