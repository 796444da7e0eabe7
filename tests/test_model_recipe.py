"""Adding a model kind is one class and one ``register_model`` line (docs/architecture.md): a memoryless linear policy
defined in a user's module is trained by ES and by PPO, evaluated and resumed through the command line like a built-in
kind, and the rollout computes exactly what the class defines."""

from __future__ import annotations

import json
import sys
import textwrap

import pytest
import torch
from helpers import cli

from metods_evo.config import RunConfig
from metods_evo.models import MODELS, build_model
from metods_evo.rollout import rollout
from metods_evo.tasks import make_task

PLUGIN = textwrap.dedent('''
    import torch
    import metods_evo
    from metods_evo.models.params import ParamSpec, action_input, linear


    class Reactive:
        """No memory: logits and value are linear in (observation, previous action, previous reward)."""

        config_fields = ()  # reads no ModelConfig field
        plasticity = ()

        def __init__(self, cfg, obs_dim, num_actions, action_dim=0):
            self.num_actions, self.action_dim = num_actions, action_dim
            inputs, out = obs_dim + max(num_actions, action_dim) + 1, num_actions or action_dim
            shapes = {"policy_w": (out, inputs), "policy_b": (out,), "value_w": (1, inputs), "value_b": (1,)}
            self.spec = ParamSpec(tuple(shapes), tuple(shapes.values()))

        @property
        def num_params(self):
            return self.spec.num_params

        def init_params(self, generator=None):
            return 0.1 * torch.randn(self.num_params, generator=generator)

        def initial_state(self, params, num_agents, generator=None):
            return {}

        def inputs(self, obs, prev_action, prev_reward):
            one_hot = action_input(prev_action, self.num_actions, obs.dtype)
            return torch.cat([obs, one_hot, prev_reward.unsqueeze(-1).to(obs.dtype)], dim=-1)

        def step(self, params, state, obs, prev_action, prev_reward):
            x = self.inputs(obs, prev_action, prev_reward)
            value = linear(x, params["value_w"], params["value_b"])[..., 0]
            return linear(x, params["policy_w"], params["policy_b"]), value, state


    metods_evo.register_model("reactive", "my_models:Reactive")
''')
TINY = ["--task", "harlow", "--set", "model.kind=reactive", "--set", "eval_episodes=8",
        "--set", "final_eval_episodes=8", "--no-progress"]


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    """my_models.py in the working directory; the model registry and sys.modules as they were afterwards."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "my_models.py").write_text(PLUGIN)
    models = dict(MODELS)
    yield tmp_path
    MODELS.clear()
    MODELS.update(models)
    sys.modules.pop("my_models", None)


@pytest.mark.slow
@pytest.mark.parametrize("optimizer, flags", [
    ("es", ["--generations", "3", "--popsize", "8", "--set", "es.episodes=2", "--set", "es.starts=1"]),
    ("ppo", ["--generations", "2", "--set", "ppo.episodes=8"])])
def test_a_registered_model_kind_trains_resumes_and_evaluates(plugin, optimizer, flags):
    trained = cli("--import", "my_models", "train", "--optimizer", optimizer, "--out", "run", *TINY, *flags)
    assert trained.exit_code == 0, trained.stderr
    config = json.loads((plugin / "run" / "config.json").read_text())
    assert config["model"]["kind"] == "reactive"
    agent = torch.load(plugin / "run" / "agent.pt", weights_only=True)
    assert agent["theta"].shape == (build_model(RunConfig.from_dict(config), make_task("harlow")).num_params,)
    resumed = cli("--import", "my_models", "train", "--resume", "run", "--generations", "4", "--no-progress")
    assert resumed.exit_code == 0, resumed.stderr
    evaluated = cli("--import", "my_models", "evaluate", "run", "--episodes", "10", "--json")
    assert evaluated.exit_code == 0, evaluated.stderr
    assert json.loads(evaluated.stdout)["episodes"] == 10


def test_the_rollout_computes_what_the_model_class_defines(plugin):
    import my_models

    task = make_task("harlow")
    cfg = RunConfig()
    cfg.model.kind = "reactive"
    model = build_model(cfg, task)
    assert isinstance(model, my_models.Reactive)
    theta = torch.stack([model.init_params(torch.Generator().manual_seed(k)) for k in range(3)])
    params = model.spec.unflatten(theta)
    result = rollout(model, params, task, 4, torch.Generator().manual_seed(0), action_mode="greedy", trace=True)
    # every recorded action is the arg-max of the logits the class computes from the traced inputs
    prev_action = torch.full((3, 4), -1, dtype=torch.long)
    prev_reward = torch.zeros(3, 4)
    for obs, action, reward in zip(result.trace["obs"], result.trace["action"], result.rewards):
        logits, _, _ = model.step(params, {}, obs, prev_action, prev_reward)
        assert torch.equal(logits.argmax(-1), action)
        prev_action, prev_reward = action, reward
