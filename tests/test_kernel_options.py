"""The allow-lists of the fused fast paths: every model and Harlow option either is computed by the kernel or turns it
off. Needs no compiled kernel: ``fused_supported`` and ``fused_rollout.supported`` only read the configuration.

``VALID`` holds non-default valid values of every ``ModelConfig`` field, and the test fails when a field is added
without one, so a new option is checked against both fast paths the day it appears. The expectations are written
out here (``STEP_REFUSES``, ``ROLLOUT_REFUSES``) rather than read back from the allow-lists."""

import dataclasses

import pytest
import torch

from metods_evo import fused_rollout
from metods_evo.config import MAMLConfig, ModelConfig, PEARLModelConfig, RL2Config
from metods_evo.models import fused
from metods_evo.models.metods import MetODS
from metods_evo.tasks.harlow import HarlowTask

VALID = {
    "kind": ["rl2", "maml", "pearl", "random"],
    "n": [7],
    "depth": [1, 2, 4, 5],
    "activation": ["relu", "sigmoid", "identity"],
    "alpha": ["scalar"],
    "write": ["linear", "mlp"],
    "write_hidden": [8],
    "write_pre": ["previous"],
    "feedback": ["diagonal"],
    "w0": ["learnt", "random"],
    "w0_std": [0.5],
    "plastic_bound": [0.0, 2.0],
    "embed_hidden": [6],
    "readout_hidden": [5],
    "action_reward_inputs": [True],
    "fused": ["any-size", "on", "off"],
    "rl2": [RL2Config(hidden=32)],
    "maml": [MAMLConfig(hidden=32, adapt_steps=3, inner_steps=2, inner_lr=0.5, first_order=True)],
    "pearl": [PEARLModelConfig(hidden=16, layers=2, latent_dim=3)],
}
"""Non-default valid values of every ``ModelConfig`` field."""
STEP_REFUSES = {("kind", "rl2"), ("kind", "maml"), ("kind", "pearl"), ("kind", "random"), ("write", "mlp"),
                ("write_pre", "previous")}
"""What the fused step does not compute: other models, the mlp write, the write of the previous step's vectors."""
ROLLOUT_REFUSES = STEP_REFUSES | {("depth", 5), ("feedback", "diagonal"), ("readout_hidden", 5)}
"""The rollout kernel also needs the lanes kernel (S <= 4), f without feedback and g linear in v_S."""
TASK_VALID = {"num_trials": [3], "max_steps": [20], "object_dim": [4]}
"""Non-default valid values of every ``HarlowTask`` option, all played by the rollout kernel."""

def refused(field: str, value, refusals: set) -> bool:
    """``(field, value) in refusals``, for values that are no set members (the baselines' dataclasses)."""
    return any(field == f and value == v for f, v in refusals)


CASES = [(field, value) for field, values in VALID.items() for value in values]


def model_and_params(cfg: ModelConfig, task: HarlowTask, pop: int = 2):
    model = MetODS(cfg, task.obs_dim, task.num_actions)
    return model, model.spec.unflatten(model.init_params(torch.Generator().manual_seed(0)).expand(pop, -1))


def test_every_config_field_has_test_values():
    assert set(VALID) == {f.name for f in dataclasses.fields(ModelConfig)}
    assert set(TASK_VALID) == set(fused_rollout._task_defaults())


def test_the_defaults_take_both_fast_paths():
    task = HarlowTask()
    model, params = model_and_params(ModelConfig(), task)
    w, v0 = torch.zeros(2, 16, 20, 20), torch.zeros(2, 16, 20)
    with torch.no_grad():
        assert fused.fused_supported(model, params, w, v0)
        assert fused_rollout.supported(model, params, task, 16)


@pytest.mark.parametrize(("field", "value"), CASES)
def test_the_fused_step_takes_exactly_its_allow_list(field, value):
    cfg = dataclasses.replace(ModelConfig(), **{field: value})
    task = HarlowTask()
    model, params = model_and_params(cfg, task)
    w, v0 = torch.zeros(2, 16, cfg.n, cfg.n), torch.zeros(2, 16, cfg.n)
    with torch.no_grad():
        assert fused.fused_supported(model, params, w, v0) == (not refused(field, value, STEP_REFUSES))


@pytest.mark.parametrize(("field", "value"), CASES)
def test_the_fused_rollout_takes_exactly_its_allow_list(field, value):
    cfg = dataclasses.replace(ModelConfig(), **{field: value})
    task = HarlowTask()
    model, params = model_and_params(cfg, task)
    with torch.no_grad():
        assert fused_rollout.supported(model, params, task, 16) == (not refused(field, value, ROLLOUT_REFUSES))


@pytest.mark.parametrize(("option", "value"), [(k, v) for k, values in TASK_VALID.items() for v in values])
def test_the_fused_rollout_plays_every_harlow_option(option, value):
    task = HarlowTask(**{option: value})
    model, params = model_and_params(ModelConfig(), task)
    with torch.no_grad():
        assert fused_rollout.supported(model, params, task, 16)


def test_an_unlisted_option_is_taken_only_at_its_default(monkeypatch):
    """What a new option gets until someone lists it: its default keeps the fast paths, any other value leaves them."""
    task = HarlowTask()
    monkeypatch.setattr(fused, "STEP_OPTIONS", {k: v for k, v in fused.STEP_OPTIONS.items() if k != "w0_std"})
    monkeypatch.setattr(fused_rollout, "MODEL_OPTIONS",
                        {k: v for k, v in fused_rollout.MODEL_OPTIONS.items() if k != "w0_std"})
    monkeypatch.setattr(fused_rollout, "TASK_OPTIONS",
                        {k: v for k, v in fused_rollout.TASK_OPTIONS.items() if k != "object_dim"})
    with torch.no_grad():
        for w0_std, on in ((ModelConfig.w0_std, True), (0.5, False)):
            model, params = model_and_params(ModelConfig(w0_std=w0_std), task)
            assert fused.fused_supported(model, params, torch.zeros(2, 16, 20, 20), torch.zeros(2, 16, 20)) == on
            assert fused_rollout.supported(model, params, task, 16) == on
        model, params = model_and_params(ModelConfig(), HarlowTask(object_dim=4))
        assert not fused_rollout.supported(model, params, HarlowTask(object_dim=4), 16)
        assert fused_rollout.supported(*model_and_params(ModelConfig(), task), task, 16)


def test_outside_the_config_the_rollout_refuses_as_before():
    task = HarlowTask()
    model, params = model_and_params(ModelConfig(), task)
    assert not fused_rollout.supported(model, params, task, 16)  # autograd on
    with torch.no_grad():
        assert not fused_rollout.supported(model, params, task, 12)  # E not a multiple of 8
        assert not fused_rollout.supported(model, {k: v.double() for k, v in params.items()}, task, 16)
