"""MetODSLayer: the functional MetODS plastic step as an nn.Module, equal to the population-batched model's step,
differentiable in its parameters, and usable inside a user's PyTorch model."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from metods_evo.config import ModelConfig
from metods_evo.models.layer import MetODSLayer
from metods_evo.models.metods import MetODS

VARIANTS = [
    {},
    {"write": "linear", "w0": "learnt"},
    {"write": "mlp", "alpha": "scalar", "activation": "relu"},
    {"write": "linear", "write_pre": "previous", "depth": 2},
    {"plastic_bound": 0.0, "depth": 1},
]


def functional(**model) -> tuple[MetODS, dict[str, torch.Tensor]]:
    """A MetODS model with N = 6 and a population of 3 different individuals."""
    cfg = ModelConfig(n=6, **model)
    net = MetODS(cfg, obs_dim=4, num_actions=3)
    g = torch.Generator().manual_seed(0)
    theta = torch.stack([net.init_params(g) + 0.1 * torch.randn(net.num_params, generator=g) for _ in range(3)])
    return net, net.spec.unflatten(theta)


def close(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal to float32 rounding (torch.testing.assert_close would import torch.distributed: seconds)."""
    return a.shape == b.shape and torch.allclose(a, b, rtol=1e-5, atol=1e-6)


def random_state(net: MetODS, batch: int, g: torch.Generator) -> dict[str, torch.Tensor]:
    state = net.start_state(0.3 * torch.randn(batch, 6, 6, generator=g))
    return {k: torch.randn(v.shape, generator=g) if k == "pre" else v for k, v in state.items()}


@pytest.mark.parametrize("model", VARIANTS)
@pytest.mark.parametrize("grad", [False, True])
def test_layer_is_the_functional_plastic_step(model, grad):
    net, params = functional(**model)
    g = torch.Generator().manual_seed(1)
    state, v0 = random_state(net, 5, g), torch.randn(5, 6, generator=g)
    kept = {k: v.clone() for k, v in state.items()}
    with torch.set_grad_enabled(grad):
        # the population-batched step, as ES runs it: every individual on the same inputs
        batched_v, batched_state = net.plastic_update(params, {k: v.expand(3, *v.shape) for k, v in state.items()},
                                                      v0.expand(3, 5, 6))
        for index in range(3):
            layer = MetODSLayer.from_model(net, params, index)
            v, new_state = layer(v0, state)
            single_v, single_state = net.plastic_update({k: p[index:index + 1] for k, p in params.items()},
                                                        {k: t.unsqueeze(0) for k, t in state.items()}, v0.unsqueeze(0))
            assert torch.equal(v, single_v[0])  # the same code on the same parameters: bit for bit
            assert new_state.keys() == single_state.keys()
            for name, value in new_state.items():
                assert torch.equal(value, single_state[name][0])
                assert close(value, batched_state[name][index])
            assert close(v, batched_v[index])
    for name, value in state.items():
        assert torch.equal(value, kept[name]), f"the layer changed its input state's {name!r}"


@pytest.mark.parametrize("model", VARIANTS)
def test_gradients_are_the_functional_models(model):
    """Backpropagation through three steps gives every parameter the gradient the flat theta gets."""
    net, params = functional(**model)
    theta = net.spec.flatten({k: v[:1] for k, v in params.items()})[0].clone().requires_grad_(True)
    layer = MetODSLayer.from_model(net, net.spec.unflatten(theta.detach()))
    g = torch.Generator().manual_seed(2)
    inputs = torch.randn(3, 4, 6, generator=g)

    def loss_of(step) -> torch.Tensor:
        state, total = None, 0.0
        for v0 in inputs:
            v, state = step(v0, state)
            total = total + (v * torch.arange(6.0)).sum() + state["W"].square().sum()
        return total

    loss_of(layer).backward()
    flat = net.spec.unflatten(theta)

    def functional_step(v0, state):
        state = state or {k: t[0] for k, t in net.initial_state(flat, 4).items()}
        v, state = net.plastic_update(flat, {k: t.unsqueeze(0) for k, t in state.items()}, v0.unsqueeze(0))
        return v[0], {k: t[0] for k, t in state.items()}

    loss_of(functional_step).backward()
    expected = net.spec.unflatten(theta.grad)
    for name, parameter in layer.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
        assert close(parameter.grad, expected[name][0]), name
    assert {name for name, _ in layer.named_parameters()} == set(layer.names)


def test_initial_state_and_errors():
    layer = MetODSLayer(n=5, depth=2, write_pre="previous")
    state = layer.initial_state(3)
    assert state["W"].shape == (3, 5, 5) and not state["W"].any() and state["pre"].shape == (3, 2, 5)
    noisy = MetODSLayer(n=5, w0="random", w0_std=0.5)
    draws = [noisy.initial_state(2, torch.Generator().manual_seed(4))["W"] for _ in range(2)]
    assert torch.equal(draws[0], draws[1]) and draws[0].std() > 0.2
    v, fresh = layer(torch.zeros(3, 5))  # no state: fresh episodes
    assert v.shape == (3, 5) and fresh["W"].shape == (3, 5, 5)
    with pytest.raises(ValueError, match=r"v0 must be \[B, 5\]"):
        layer(torch.zeros(3, 4), state)
    with pytest.raises(ValueError, match=r"state\['W'\] must be"):
        layer(torch.zeros(2, 5), state)
    twin = MetODSLayer(n=5, depth=2, write_pre="previous", generator=torch.Generator().manual_seed(9))
    twin.load_state_dict(layer.state_dict())
    x = torch.randn(3, 5)
    assert torch.equal(twin(x, state)[0], layer(x, state)[0])
    wide = MetODSLayer(n=5).double()
    assert wide(torch.zeros(2, 5, dtype=torch.float64))[0].dtype == torch.float64


class Recall(nn.Module):
    """A user's model: linear embedding, the plastic layer, linear read-out."""

    def __init__(self):
        super().__init__()
        self.embed, self.plastic, self.head = nn.Linear(2, 8), MetODSLayer(n=8, depth=2), nn.Linear(8, 1)

    def forward(self, xs: torch.Tensor) -> torch.Tensor:  # xs [T, B, 2] -> the read-out at the last step [B]
        state = self.plastic.initial_state(xs.shape[1])
        for x in xs:
            v, state = self.plastic(torch.tanh(self.embed(x)), state)
        return self.head(v)[:, 0]


def test_layer_trains_inside_a_user_model():
    """Recall a cue seen at the first of four steps: only the plastic weights carry it to the last step."""
    torch.manual_seed(0)
    model = Recall()
    cue = torch.randint(0, 2, (32,)).float() * 2 - 1
    xs = torch.zeros(4, 32, 2)
    xs[0, :, 0], xs[1:, :, 1] = cue, 1.0  # the cue, then a constant "recall" input
    optimizer = torch.optim.Adam(model.parameters(), lr=0.03)
    losses = []
    for _ in range(30):
        loss = (model(xs) - cue).square().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.1 * losses[0], losses[::5]
