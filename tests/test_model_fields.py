"""Each model kind's declared ``config_fields``: the ModelConfig fields it does not list really cannot change it, so
``experiments.plan_runs`` may ignore them when it checks that a finished run matches its planned config."""

from dataclasses import fields, replace

import pytest
import torch
from test_continuous import HiddenDirection

from metods_evo.config import MAMLConfig, ModelConfig, PEARLModelConfig, RL2Config, RunConfig
from metods_evo.experiments import _differences, _relevant
from metods_evo.models import MODELS, config_fields, model_class
from metods_evo.rollout import rollout
from metods_evo.tasks import make_task

# A small base config (every kind builds from it) and another valid value for every ModelConfig field.
BASE = dict(n=6, depth=2, write="linear", rl2=RL2Config(hidden=8), maml=MAMLConfig(hidden=8, adapt_steps=2),
            pearl=PEARLModelConfig(hidden=8, layers=1))
OTHER = dict(n=5, depth=1, activation="relu", alpha="scalar", write="mlp", write_hidden=4, write_pre="previous",
             feedback="diagonal", w0="random", w0_std=0.3,
             plastic_bound=2.0, embed_hidden=4, readout_hidden=4, action_reward_inputs=True, fused="off",
             rl2=RL2Config(hidden=5), maml=MAMLConfig(hidden=5, adapt_steps=3, inner_steps=2, inner_lr=0.3,
                                                      first_order=True),
             pearl=PEARLModelConfig(hidden=5, layers=2, latent_dim=3))


def task_for(kind: str):
    """Harlow, or a continuous task for the kinds that need one."""
    return HiddenDirection() if kind == "pearl" else make_task("harlow")


def test_every_field_has_another_value_and_every_declared_field_exists():
    names = {f.name for f in fields(ModelConfig)} - {"kind"}
    assert set(OTHER) == names, "give OTHER a second value for each new ModelConfig field"
    for kind in MODELS:
        declared = config_fields(kind)
        assert declared is not None, f"{kind} should declare the ModelConfig fields it reads"
        assert set(declared) <= names, (kind, set(declared) - names)


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_undeclared_fields_change_nothing(kind):
    """Every field the kind does not declare, changed at once: the same parameter count and, from the same theta and
    seed, bitwise the same Harlow rollout (actions sampled, so the whole policy distribution is compared)."""
    task = task_for(kind)
    base = ModelConfig(kind=kind, **BASE)
    changed = replace(base, **{k: v for k, v in OTHER.items() if k not in config_fields(kind)})
    a = model_class(kind)(base, task.obs_dim, task.num_actions, task.action_dim)
    b = model_class(kind)(changed, task.obs_dim, task.num_actions, task.action_dim)
    assert a.num_params == b.num_params
    g = torch.Generator().manual_seed(0)
    theta = torch.stack([a.init_params(g) + 0.3 * torch.randn(a.num_params, generator=g) for _ in range(2)])
    runs = [rollout(m, m.spec.unflatten(theta), task, 4, torch.Generator().manual_seed(1), action_mode="sample")
            for m in (a, b)]
    assert torch.equal(runs[0].rewards, runs[1].rewards)
    assert torch.equal(runs[0].returns, runs[1].returns)


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_plan_runs_compares_only_the_declared_fields(kind):
    """A finished run of one kind stays valid when another kind's defaults change, not when its own do."""
    old = RunConfig(optimizer="ppo")
    old.model = ModelConfig(kind=kind, **BASE)
    new = RunConfig(optimizer="ppo")
    new.model = replace(old.model, **{k: v for k, v in OTHER.items() if k not in config_fields(kind)})
    assert _differences(_relevant(old), _relevant(new)) == []
    for name in config_fields(kind):
        new.model = replace(old.model, **{name: OTHER[name]})
        changed = [k for k, _, _ in _differences(_relevant(old), _relevant(new))]
        assert changed and all(k == f"model.{name}" or k.startswith(f"model.{name}.") for k in changed), changed


READ_IN_OUT = ("f_", "feedback_c", "g_", "policy_", "value_", "log_std")  # f, the read and g: not plasticity


@pytest.mark.parametrize("options", [dict(write="linear"),
                                     dict(write="mlp", write_hidden=3, w0="learnt", alpha="matrix"),
                                     dict(write="hebbian", embed_hidden=4, readout_hidden=4, feedback="diagonal")])
def test_metods_declares_exactly_its_plasticity_parameters(options):
    """``model.plasticity`` (what hybrid.mode=split searches by ES) holds every entry of theta outside f, the read and
    g: a parameter added to the model is either one or the other, never silently neither."""
    task = make_task("harlow")
    model = model_class("metods")(replace(ModelConfig(), **options), task.obs_dim, task.num_actions)
    outside = {name for name in model.spec.names if not name.startswith(READ_IN_OUT)}
    assert set(model.plasticity) == outside and {"alpha", "kappa", "beta"} <= outside
    for kind in set(MODELS) - {"metods"}:
        own = task_for(kind)
        other = model_class(kind)(ModelConfig(kind=kind, **BASE), own.obs_dim, own.num_actions, own.action_dim)
        assert other.plasticity == ()
