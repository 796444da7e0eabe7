"""One flat parameter vector theta <-> named tensors, with a leading population axis.

evotorch hands us a population as ``[P, D]``; ``ParamSpec.unflatten`` turns it into
``{name: [P, *shape]}`` views without copying, so the model's batched forward reads every
individual's weights straight out of the population matrix.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class ParamSpec:
    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]

    @property
    def sizes(self) -> tuple[int, ...]:
        return tuple(math.prod(s) for s in self.shapes)

    @property
    def num_params(self) -> int:
        return sum(self.sizes)

    def offsets(self) -> dict[str, slice]:
        out, start = {}, 0
        for name, size in zip(self.names, self.sizes):
            out[name] = slice(start, start + size)
            start += size
        return out

    def unflatten(self, flat: Tensor) -> dict[str, Tensor]:
        """``[P, D]`` (or ``[D]``, treated as P = 1) -> ``{name: [P, *shape]}`` views."""
        flat = flat.as_subclass(torch.Tensor)  # e.g. evotorch's read-only tensors: the step writes in place
        if flat.dim() == 1:
            flat = flat.unsqueeze(0)
        if flat.shape[-1] != self.num_params:
            raise ValueError(f"expected {self.num_params} parameters, got {flat.shape[-1]}")
        pieces = torch.split(flat, self.sizes, dim=-1)
        return {n: p.reshape(flat.shape[0], *s) for n, p, s in zip(self.names, pieces, self.shapes)}

    def flatten(self, params: dict[str, Tensor]) -> Tensor:
        """Inverse of ``unflatten``: ``{name: [P, *shape]}`` -> ``[P, D]``."""
        first = params[self.names[0]]
        return torch.cat([params[n].reshape(first.shape[0], -1) for n in self.names], dim=-1)


def linear(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """Per-individual linear map: x ``[P, E, in]``, weight ``[P, out, in]``, bias ``[P, out]``."""
    y = torch.matmul(x, weight.transpose(-1, -2))
    return y if bias is None else y + bias.unsqueeze(1)


def action_input(prev_action: Tensor, num_actions: int, dtype: torch.dtype) -> Tensor:
    """The previous action as a model input: one-hot ``[..., A]`` for a discrete task (all zeros for -1, "none"),
    the float vector itself for a continuous one (``num_actions = 0``). One-hot by comparison with ``arange``:
    ``F.one_hot`` checks the index range with a reduction over the batch, ~10 % of a batched Harlow rollout."""
    if not num_actions:
        return prev_action.to(dtype)
    return (prev_action.unsqueeze(-1) == torch.arange(num_actions, device=prev_action.device)).to(dtype)
