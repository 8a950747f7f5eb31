"""Fused epilogues: what a convolution does to its accumulator before its one store.

Per output channel k at output pixel (n, p, q), in fp32 on the accumulator `acc`:

    y = acc * scale[k]          (scaled: a folded batch norm's scale)
    y = y + bias[k]             (a bias, or a folded batch norm's shift)
    y = act(y + residual)       (residual 'before' the activation)
    y = act(y) + residual       (residual 'after' it)
    out = y cast to the output's dtype, stored once

`Epilogue` says which of these steps a call runs: a plain value (no tensors) that the
problem, the plans and the choices read. `apply` is the same math in PyTorch ops: the
reference backend, split-K's non-dense sum and calls that record gradients run it; the
kernels run `kernels/common.py`'s `apply_epilogue`. PyTorch's convolution
(`variants/aten.py`) runs `apply_in_place`: the steps as a model's own ops would run them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .params import check_tensor

ACTIVATIONS = ("relu", "relu6", "silu", "gelu", "hardswish", "sigmoid")
RESIDUALS = ("before", "after")  # where the residual joins: before or after the activation


@dataclass(frozen=True)
class Epilogue:
    """The steps of a fused epilogue: `activation` (one of ACTIVATIONS, or None), `residual`
    ('before' or 'after' the activation, or None: no residual) and `scaled` (a per-channel
    scale first). A bias is the convolution's own argument, added after the scale either way.
    `Epilogue()` (`NONE`) is a plain convolution."""

    activation: str | None = None
    residual: str | None = None
    scaled: bool = False

    def __post_init__(self) -> None:
        if self.activation is not None and self.activation not in ACTIVATIONS:
            raise ValueError(
                f"activation must be one of {ACTIVATIONS} or None, got {self.activation!r}"
            )
        if self.residual is not None and self.residual not in RESIDUALS:
            raise ValueError(f"residual must be one of {RESIDUALS} or None, got {self.residual!r}")
        if type(self.scaled) is not bool:
            raise ValueError(f"scaled must be a bool, got {self.scaled!r}")

    @property
    def empty(self) -> bool:
        """True for a plain convolution: nothing after the bias."""
        return self.activation is None and self.residual is None and not self.scaled

    @property
    def constexprs(self) -> dict[str, str]:
        """The kernels' flags for it (`kernels/common.py`, `apply_epilogue`): ACTIVATION and
        RESIDUAL, '' where there is none. A scale is a pointer the kernel checks for."""
        return {"ACTIVATION": self.activation or "", "RESIDUAL": self.residual or ""}

    def __str__(self) -> str:
        """The steps in the order they run, e.g. 'scale, + residual, relu'."""
        steps = ["scale"] if self.scaled else []
        steps += ["+ residual"] if self.residual == "before" else []
        steps += [self.activation] if self.activation else []
        steps += ["+ residual"] if self.residual == "after" else []
        return ", ".join(steps) or "none"


NONE = Epilogue()

# The activations in PyTorch ops (GELU exact: the erf form, F.gelu's default).
_ACTIVATION_OPS = {
    "relu": F.relu,
    "relu6": F.relu6,
    "silu": F.silu,
    "gelu": F.gelu,
    "hardswish": F.hardswish,
    "sigmoid": torch.sigmoid,
}


# The same, in place on the output (GELU has no in-place form).
_IN_PLACE_OPS = {
    "relu": torch.relu_,
    "relu6": lambda y: F.hardtanh_(y, 0.0, 6.0),
    "silu": lambda y: F.silu(y, inplace=True),
    "gelu": F.gelu,
    "hardswish": lambda y: F.hardswish(y, inplace=True),
    "sigmoid": torch.sigmoid_,
}


def epilogue_of(scale, activation, residual, residual_after_activation) -> Epilogue:
    """The epilogue of `conv2d_fused`'s arguments, checked (TypeError/ValueError naming the
    argument)."""
    for name, t in (("scale", scale), ("residual", residual)):
        if t is not None and not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor or None, got {type(t).__name__}")
    if type(residual_after_activation) is not bool:
        raise TypeError(
            f"residual_after_activation must be a bool, got {residual_after_activation!r}"
        )
    if residual_after_activation and residual is None:
        raise ValueError("residual_after_activation=True needs a residual, got residual=None")
    where = None if residual is None else "after" if residual_after_activation else "before"
    return Epilogue(activation=activation, residual=where, scaled=scale is not None)


def check_tensors(epilogue: Epilogue, scale, residual, *, output_shape: tuple[int, ...],
                  dtype: torch.dtype, device: torch.device) -> None:  # fmt: skip
    """Check the epilogue's tensors against the output (`output_shape`, as the caller gets
    it: unbatched too): scale [K] in `dtype` or float32, residual of the output's shape and
    dtype (any strides), both on `device`."""
    k = output_shape[-3]
    if epilogue.scaled:
        check_tensor("scale", scale, dims=(1,))
        if tuple(scale.shape) != (k,):
            raise ValueError(f"scale must have shape ({k},), got {tuple(scale.shape)}")
        if scale.dtype not in (dtype, torch.float32):
            allowed = " or ".join(dict.fromkeys(map(str, (dtype, torch.float32))))
            raise TypeError(f"scale dtype must be {allowed}, got {scale.dtype}")
        if scale.device != device:
            raise ValueError(f"scale is on {scale.device} but input is on {device}")
    if epilogue.residual:
        check_tensor("residual", residual, dims=(len(output_shape),))
        if tuple(residual.shape) != tuple(output_shape):
            raise ValueError(
                f"residual must have the output's shape {tuple(output_shape)}, got "
                f"{tuple(residual.shape)}"
            )
        if residual.dtype != dtype:
            raise TypeError(f"residual dtype {residual.dtype} does not match the output's {dtype}")
        if residual.device != device:
            raise ValueError(f"residual is on {residual.device} but input is on {device}")


def apply(acc: torch.Tensor, epilogue: Epilogue, *, scale=None, bias=None, residual=None,
          dtype: torch.dtype | None = None) -> torch.Tensor:  # fmt: skip
    """The epilogue in PyTorch ops on `acc` [N, K, P, Q] (a convolution without its bias):
    computed in float32 (float64 for a float64 `acc`), returned in `dtype` (default: acc's).
    Out of place, so it records gradients and traces."""
    compute = torch.float64 if acc.dtype == torch.float64 else torch.float32
    y = acc.to(compute)
    if epilogue.scaled:
        y = y * scale.to(compute).view(1, -1, 1, 1)
    if bias is not None:
        y = y + bias.to(compute).view(1, -1, 1, 1)
    if epilogue.residual == "before":
        y = y + residual.to(compute)
    if epilogue.activation is not None:
        y = _ACTIVATION_OPS[epilogue.activation](y)
    if epilogue.residual == "after":
        y = y + residual.to(compute)
    return y.to(dtype or acc.dtype)


def apply_in_place(y: torch.Tensor, epilogue: Epilogue, *, scale=None, bias=None,
                   residual=None) -> torch.Tensor:  # fmt: skip
    """The epilogue on a convolution's output `y` in its own dtype, in place where PyTorch
    has the op: one pass per step, each step rounded to `y`'s dtype, as a model's unfused
    batch norm, activation and add run. For an output PyTorch already made (no gradients)."""
    if epilogue.scaled:
        y = y.mul_(scale.view(-1, 1, 1))
    if bias is not None:
        y = y.add_(bias.view(-1, 1, 1))
    if epilogue.residual == "before":
        y = y.add_(residual)
    if epilogue.activation is not None:
        y = _IN_PLACE_OPS[epilogue.activation](y)
    if epilogue.residual == "after":
        y = y.add_(residual)
    return y
