"""PEARL (optimizers/pearl.py, models/pearl.py): the posterior against a direct product of Gaussians, the critic
targets against a hand computation, the agent as a model of the package, exact resume, bad input, the command line,
and a short run on a hidden-direction task that must adapt."""

import json

import pytest
import torch
from helpers import cli, refused

from metods_evo.config import make_config
from metods_evo.models.pearl import posterior
from metods_evo.optimizers.pearl import PEARLTrainer, adaptation_returns, critic_target, gaussian_kl
from metods_evo.rollout import rollout
from metods_evo.tasks.base import Task

pytestmark = pytest.mark.usefixtures("work_in_tmp")


class HiddenDirection(Task):
    """A point on a line must move in a hidden direction d = +-1: reward d * a per step, a in [-1, 1]. The
    observation (the position, moved 0.1 a per step) does not tell d; a reward does. 10 steps."""

    obs_dim, num_actions, action_dim, max_steps = 1, 0, 1, 10

    def reset(self, num_envs, generator):
        direction = torch.randint(0, 2, (num_envs,), generator=generator, device=self.device).float() * 2 - 1
        state = {"direction": direction, "position": torch.zeros(num_envs, device=self.device),
                 "t": torch.zeros(num_envs, dtype=torch.long, device=self.device)}
        return state, state["position"].unsqueeze(1)

    def step(self, state, action, generator):
        live = state["t"] < self.max_steps
        action = action[:, 0] * live
        t = state["t"] + live
        position = state["position"] + 0.1 * action
        state = dict(state, position=position, t=t)
        return state, position.unsqueeze(1), state["direction"] * action, t >= self.max_steps


@pytest.fixture
def direction_task():
    from metods_evo.tasks import TASKS, register

    register("hidden-direction-test", HiddenDirection)
    yield "hidden-direction-test"
    TASKS.pop("hidden-direction-test")


SMALL = {"model.kind": "pearl", "model.pearl.hidden": "16", "model.pearl.layers": "2", "pearl.trials": "4",
         "pearl.initial_trials": "4", "pearl.updates": "3", "pearl.batch_tasks": "3", "pearl.batch_size": "8",
         "pearl.context_size": "5", "pearl.buffer_trials": "6"}


def test_posterior_is_the_product_of_the_factors():
    generator = torch.Generator().manual_seed(0)
    mu = torch.randn(3, 7, 4, generator=generator, dtype=torch.float64)
    variance = torch.rand(3, 7, 4, generator=generator, dtype=torch.float64) + 0.05
    weight = (torch.rand(3, 7, generator=generator) < 0.6).double()
    weight[2] = 0  # no factor: the prior
    mean, var = posterior(mu, variance, weight)
    for task in range(3):
        for dim in range(4):
            precision, weighted = 0.0, 0.0
            for i in range(7):
                if weight[task, i]:
                    precision += 1 / float(variance[task, i, dim])
                    weighted += float(mu[task, i, dim]) / float(variance[task, i, dim])
            expected = (weighted / precision, 1 / precision) if precision else (0.0, 1.0)
            assert float(mean[task, dim]) == pytest.approx(expected[0], rel=1e-12, abs=1e-12)
            assert float(var[task, dim]) == pytest.approx(expected[1], rel=1e-12)
    unweighted = posterior(mu, variance)
    torch.testing.assert_close(unweighted, posterior(mu, variance, torch.ones(3, 7, dtype=torch.float64)))
    order = torch.randperm(7, generator=generator)
    torch.testing.assert_close(posterior(mu[:, order], variance[:, order]), unweighted)  # permutation invariant
    kl = gaussian_kl(mean, var)
    by_hand = sum(0.5 * (var[:, d] + mean[:, d] ** 2 - 1 - torch.log(var[:, d])) for d in range(4))
    torch.testing.assert_close(kl, by_hand)
    assert float(kl[2]) == 0.0


def test_critic_targets_by_hand():
    reward = torch.tensor([1.0, -0.5, 2.0])
    terminal = torch.tensor([False, True, False])
    q1, q2 = torch.tensor([3.0, 4.0, -1.0]), torch.tensor([2.5, 5.0, 0.5])
    log_prob = torch.tensor([-1.0, 0.3, 2.0])
    target = critic_target(reward, terminal, torch.minimum(q1, q2), log_prob, 0.2, 5.0, 0.99)
    expected = [1.0 * 5 + 0.99 * (2.5 - 0.2 * -1.0), -0.5 * 5, 2.0 * 5 + 0.99 * (-1.0 - 0.2 * 2.0)]
    assert target.tolist() == pytest.approx(expected)


def test_the_agent_infers_z_online_from_its_own_episode(direction_task):
    """As a model (what evaluate plays), step t's z is the posterior sample of the episode's first t transitions,
    with the noise drawn at the episode's start."""
    cfg = make_config(direction_task, "pearl", SMALL | {"generations": "1"})
    trainer = PEARLTrainer(cfg)
    model, task = trainer.model, trainer.task
    params = model.spec.unflatten(trainer.center())
    state = model.initial_state(params, 2, torch.Generator().manual_seed(1))
    observations = torch.randn(4, 1, 2, 1)
    actions = torch.rand(4, 1, 2, 1) * 2 - 1
    rewards = torch.randn(4, 1, 2)
    prev_action, prev_reward = torch.zeros(1, 2, 1), torch.zeros(1, 2)
    for t in range(4):
        out, value, state = model.step(params, state, observations[t], prev_action, prev_reward)
        if t == 0:
            mean, variance = torch.zeros(1, 2, model.latent_dim), torch.ones(1, 2, model.latent_dim)
        else:
            context = model.context(observations[:t], actions[:t], rewards[:t], observations[1:t + 1])
            mu_i, var_i = model.encode(params, context.permute(1, 2, 0, 3).reshape(1, 2 * t, -1))
            mean, variance = posterior(mu_i.view(1, 2, t, -1), var_i.view(1, 2, t, -1))
        z = mean + variance.sqrt() * state["eps"]
        torch.testing.assert_close(out, torch.tanh(model.policy(params, observations[t], z)[0]))
        assert not value.any()
        prev_action, prev_reward = actions[t], rewards[t]
    result = rollout(model, params, task, 6, torch.Generator().manual_seed(0), action_mode="greedy")
    assert result.rewards.shape == (10, 1, 6)


def test_the_encoder_learns_through_the_critics_and_the_policy_through_its_own_loss(direction_task):
    cfg = make_config(direction_task, "pearl", SMALL | {"generations": "1", "pearl.updates": "0"})
    trainer = PEARLTrainer(cfg)
    trainer.step()  # fills the buffer
    losses = trainer.losses(torch.Generator().manual_seed(0))
    offsets = trainer.model.spec.offsets()
    encoder = torch.zeros(trainer.model.num_params, dtype=torch.bool)
    for name, span in offsets.items():
        encoder[span] = name.startswith("enc")
    policy = ~encoder
    policy[offsets["log_std"]] = False
    (critic_grad,) = torch.autograd.grad(losses["critic"], trainer.theta)
    (policy_grad,) = torch.autograd.grad(losses["policy"], trainer.theta)
    assert critic_grad[encoder].abs().sum() > 0 and not critic_grad[~encoder].any()
    assert policy_grad[policy].abs().sum() > 0 and not policy_grad[~policy].any()
    (alpha_grad,) = torch.autograd.grad(losses["alpha"], trainer.log_alpha)
    assert float(alpha_grad) != 0


def test_resume_continues_exactly(direction_task):
    cfg = make_config(direction_task, "pearl", SMALL | {"generations": "4"})
    straight = PEARLTrainer(cfg)
    rows = [straight.step() for _ in range(4)]  # 24 trials: the 6-trial buffer wraps around
    first = PEARLTrainer(cfg)
    resumed_rows = [first.step() for _ in range(2)]
    resumed = PEARLTrainer(cfg)
    resumed.load_state_dict(first.state_dict())
    resumed_rows += [resumed.step() for _ in range(2)]
    end, state = resumed.state_dict(), straight.state_dict()
    for name in ("theta", "critic", "target_critic", "log_alpha"):
        assert torch.equal(end[name], state[name]), name
    assert all(torch.equal(end["buffer"][k], state["buffer"][k]) for k in state["buffer"])
    drop = ("perf/generation_s", "perf/steps_per_s")
    assert [{k: v for k, v in r.items() if k not in drop} for r in resumed_rows] == \
           [{k: v for k, v in r.items() if k not in drop} for r in rows]


@pytest.mark.parametrize("setting, message", [
    ("pearl.lr=0", "pearl.lr"), ("pearl.trial_episodes=0", "pearl.trial_episodes"), ("pearl.tau=1.5", "pearl.tau"),
    ("pearl.batch_tasks=-1", "pearl.batch_tasks"), ("model.pearl.latent_dim=0", "model.pearl.latent_dim"),
    ("pearl.gamma=nan", "pearl.gamma"), ("pearl.context_size=two", "pearl.context_size"),
    ("model.kind=rl2", "model.kind=pearl"), ("eval_action_mode=sample", "eval_action_mode=sample")])
def test_bad_pearl_settings_are_refused(tmp_path, direction_task, setting, message):
    args = ["--set", "model.kind=pearl"] if not setting.startswith("model.kind") else []
    refused(cli("train", "--task", direction_task, "--optimizer", "pearl", *args, "--set", setting, "--out",
                tmp_path / "run", "--no-progress"), message)
    assert not (tmp_path / "run").exists()


def test_pearl_refuses_discrete_tasks(tmp_path):
    refused(cli("train", "--task", "harlow", "--optimizer", "pearl", "--set", "model.kind=pearl", "--out",
                tmp_path / "run"), "continuous actions")


def test_other_optimizers_cannot_train_the_pearl_model(tmp_path, direction_task):
    refused(cli("train", "--task", direction_task, "--optimizer", "ppo", "--set", "model.kind=pearl", "--out",
                tmp_path / "run"), "model.kind=pearl is trained by --optimizer pearl only")


def test_cli_trains_and_evaluates(tmp_path, direction_task):
    out = tmp_path / "run"
    settings = [x for key, value in SMALL.items() for x in ("--set", f"{key}={value}")]
    result = cli("train", "--task", direction_task, "--optimizer", "pearl", "--budget-steps", "200", *settings,
                 "--set", "eval_every=1", "--set", "eval_episodes=8", "--set", "final_eval_episodes=8", "--out", out,
                 "--no-progress")
    assert result.exit_code == 0, result.output
    assert (out / "agent.pt").is_file() and (out / "checkpoint.pt").is_file()
    report = json.loads(cli("evaluate", out, "--episodes", "8", "--json").output)
    assert report["action_mode"] == "greedy" and "return" in report["metrics"]
    result = cli("train", "--resume", out, "--budget-steps", "400", "--no-progress")
    assert result.exit_code == 0, result.output
    config = json.loads((out / "config.json").read_text())
    config["pearl"]["trial_episodes"] = 3  # the checkpoint's buffer holds trials of 2 episodes
    (out / "config.json").write_text(json.dumps(config))
    refused(cli("train", "--resume", out, "--budget-steps", "600", "--no-progress"), "pearl.trial_episodes=3")


@pytest.mark.mujoco
@pytest.mark.slow
def test_cli_trains_on_cheetah_dir(tmp_path):
    pytest.importorskip("mujoco")
    out = tmp_path / "run"
    result = cli("train", "--task", "cheetah-dir", "--optimizer", "pearl", "--budget-steps", "800", "--set",
                 "pearl.initial_trials=2", "--set", "pearl.trials=2", "--set", "pearl.updates=2", "--set",
                 "eval_episodes=2", "--set", "final_eval_episodes=2", "--out", out, "--no-progress")
    assert result.exit_code == 0, result.output
    report = json.loads(cli("evaluate", out, "--episodes", "2", "--json").output)
    assert "return" in report["metrics"] and report["groups"]


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_pearl_learns_to_adapt_between_episodes(direction_task, seed):
    """Episode 1 of a trial cannot know d (z from the prior: any policy earns 0 in expectation); after one context
    episode, z must tell d: the second episode's return (at most 10) must be far above the first's. Seconds."""
    cfg = make_config(direction_task, "pearl", {"model.kind": "pearl", "model.pearl.hidden": "32",
                                                "model.pearl.layers": "2", "pearl.updates": "50",
                                                "pearl.batch_tasks": "8", "pearl.batch_size": "32",
                                                "pearl.context_size": "10", "pearl.buffer_trials": "128",
                                                "pearl.lr": "3e-3", "pearl.reward_scale": "1", "pearl.gamma": "0.9",
                                                "pearl.kl_lambda": "0.01", "seed": str(seed)})
    trainer = PEARLTrainer(cfg)
    for _ in range(12):
        trainer.step()
    first, adapted = adaptation_returns(cfg, trainer.center(), trials=200, seed=123)
    assert adapted > 6.0 and adapted > first + 5.0, (first, adapted)
    # as evaluate plays it, z inferred within the episode: after its first reward the agent knows d
    online = rollout(trainer.model, trainer.model.spec.unflatten(trainer.center()), trainer.task, 200,
                     torch.Generator().manual_seed(123)).metrics["return"].mean()
    assert online > 5.0, online
