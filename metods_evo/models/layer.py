"""The MetODS plastic layer as a ``torch.nn.Module``, for use inside one's own PyTorch model.

    layer = MetODSLayer(n=20, depth=3, write="linear")
    state = layer.initial_state(batch_size)          # {"W": [B, N, N]}: fresh at every episode start
    v, state = layer(v0, state)                      # v0, v: [B, N]

``v0`` is the layer's input vector (in the MetODS model, the embedding f(s_t, a_{t-1}, r_{t-1})), ``v`` the read
v_S after the S read / write recursions, and the state the plastic weights W_t (plus, with
``write_pre="previous"``, the previous step's vectors ``"pre"`` [B, S, N]). Gradients flow through the state to
alpha, kappa, beta and the write rule's weights (``nn.Parameter``s), so a model trained by backpropagation
through time learns them as the project's gradient trainers do.

The recursions are those of ``metods_evo.models.metods.MetODS`` (``plastic_update``, ``initial_state``), which
ES and the gradient trainers run population-batched: the layer calls them with a population of one.
"""

from __future__ import annotations

from dataclasses import fields

import torch
from torch import Tensor, nn

from metods_evo.config import ModelConfig
from metods_evo.models.metods import MetODS

# What MetODS.plastic_update and initial_state read besides the state: the plasticity, the read and write
# coefficients, the write rule's weights and a learnt W0. f, g and the output leak into f are not the layer's.
PLASTIC_PARAMETERS = ("alpha", "kappa", "beta", "w0", "write_l", "write_h_w", "write_h_b", "write_o_w", "write_o_b")
LAYER_FIELDS = ("n", "depth", "activation", "alpha", "write", "write_hidden", "write_pre", "w0", "w0_std",
                "plastic_bound", "fused")


class MetODSLayer(nn.Module):
    """MetODS's plastic layer: ``forward(v0 [B, N], state) -> (v_S [B, N], state)``.

    The options are ``ModelConfig``'s of the same names: ``n`` neurons, recursion ``depth`` S, ``activation``
    sigma, ``alpha`` ('matrix' or 'scalar'), ``write`` rule ('hebbian', 'linear', 'mlp', with ``write_hidden``
    units), ``write_pre`` ('current' or 'previous'), ``w0`` ('zero', 'learnt', 'random' with ``w0_std``),
    ``plastic_bound`` (|W| clip, 0: none) and ``fused`` (the C++ kernel for large no-grad steps). Parameters start
    as the MetODS model's (``MetODS.init_params``), drawn from ``generator``.
    """

    def __init__(self, n: int = 20, depth: int = 3, *, activation: str = "tanh", alpha: str = "matrix",
                 write: str = "hebbian", write_hidden: int = 16, write_pre: str = "current", w0: str = "zero",
                 w0_std: float = 0.1, plastic_bound: float = 5.0, fused: str = "auto",
                 generator: torch.Generator | None = None):
        super().__init__()
        cfg = ModelConfig(n=n, depth=depth, activation=activation, alpha=alpha, write=write, write_hidden=write_hidden,
                          write_pre=write_pre, w0=w0, w0_std=w0_std, plastic_bound=plastic_bound, fused=fused)
        # obs and action sizes only shape f and g, which the layer leaves out.
        self.functional = MetODS(cfg, obs_dim=1, num_actions=1)
        self.names = tuple(name for name in self.functional.spec.names if name in PLASTIC_PARAMETERS)
        initial = self.functional.spec.unflatten(self.functional.init_params(generator))
        for name in self.names:
            self.register_parameter(name, nn.Parameter(initial[name][0].clone()))

    @classmethod
    def from_model(cls, model: MetODS, params: dict[str, Tensor], index: int = 0) -> MetODSLayer:
        """The plastic layer of individual ``index`` of a functional ``model``'s ``params`` (``spec.unflatten``
        of a theta, e.g. a trained agent's ``agent.model`` and ``agent.params``), its values copied."""
        layer = cls(**{name: getattr(model.cfg, name) for name in LAYER_FIELDS
                       if name in {f.name for f in fields(model.cfg)}})
        with torch.no_grad():
            for name in layer.names:
                getattr(layer, name).copy_(params[name][index])
        return layer

    @property
    def n(self) -> int:
        return self.functional.cfg.n

    def batched_params(self) -> dict[str, Tensor]:
        """The parameters as the functional model takes them: ``{name: [1, *shape]}`` (a population of one)."""
        params = {name: getattr(self, name).unsqueeze(0) for name in self.names}
        # MetODS.initial_state reads the population size, device and dtype off f's bias.
        params["f_b"] = self.kappa.new_zeros(1, self.n)
        return params

    def initial_state(self, batch_size: int, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """The state of ``batch_size`` fresh episodes: ``{"W": [B, N, N]}`` (W0: zero, learnt or random by
        ``generator``), plus ``"pre"`` [B, S, N] with ``write_pre="previous"``."""
        state = self.functional.initial_state(self.batched_params(), batch_size, generator)
        return {name: value[0] for name, value in state.items()}

    def forward(self, v0: Tensor, state: dict[str, Tensor] | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        """One step for B episodes: ``v0 [B, N]`` and their state (None: fresh episodes) -> (``v_S [B, N]``, the
        next state). The state is not modified in place."""
        if v0.dim() != 2 or v0.shape[1] != self.n:
            raise ValueError(f"v0 must be [B, {self.n}], got {list(v0.shape)}")
        if state is None:
            state = self.initial_state(v0.shape[0])
        if state["W"].shape != (v0.shape[0], self.n, self.n):
            raise ValueError(f"state['W'] must be [{v0.shape[0]}, {self.n}, {self.n}], got {list(state['W'].shape)}")
        params = self.batched_params()
        v, new_state = self.functional.plastic_update(params, {k: t.unsqueeze(0) for k, t in state.items()},
                                                      v0.unsqueeze(0))
        return v[0], {name: value[0] for name, value in new_state.items()}

    def extra_repr(self) -> str:
        cfg = self.functional.cfg
        return (f"n={cfg.n}, depth={cfg.depth}, activation={cfg.activation!r}, alpha={cfg.alpha!r}, "
                f"write={cfg.write!r}, write_pre={cfg.write_pre!r}, w0={cfg.w0!r}, plastic_bound={cfg.plastic_bound}")
