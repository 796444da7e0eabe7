"""Policy-gradient meta-training: BPTT gradients against finite differences, GAE against a direct reference,
replay against the recorded rollout, PPO / A2C / hybrid trainers, and a short A2C run that must learn."""

import math

import pytest
import torch

from metods_evo.config import ModelConfig, PGConfig, make_config
from metods_evo.models.metods import MetODS
from metods_evo.optimizers.hybrid import HybridTrainer, plasticity_mask
from metods_evo.optimizers.pg import actor_critic_loss, gae
from metods_evo.rollout import episodes_of, replay, rollout
from metods_evo.tasks import make_task
from metods_evo.tasks.base import Task
from metods_evo.train import make_trainer


def gae_reference(rewards, values, lengths, gamma, lam):
    """GAE per episode, written out from its definition: A_t = sum_k (gamma lam)^k delta_{t+k}."""
    T, B = rewards.shape
    adv = torch.zeros(T, B, dtype=torch.float64)
    for b in range(B):
        n = int(lengths[b])
        v = [float(values[t, b]) for t in range(n)] + [0.0]
        deltas = [float(rewards[t, b]) + gamma * v[t + 1] - v[t] for t in range(n)]
        for t in range(n):
            adv[t, b] = sum((gamma * lam) ** k * deltas[t + k] for k in range(n - t))
    return adv


def test_gae_matches_definition():
    g = torch.Generator().manual_seed(0)
    rewards, values = torch.randn(7, 5, generator=g, dtype=torch.float64), torch.randn(7, 5, generator=g,
                                                                                         dtype=torch.float64)
    lengths = torch.tensor([7, 3, 1, 5, 6])
    valid = torch.arange(7).unsqueeze(1) < lengths
    rewards = rewards * valid
    adv, returns = gae(rewards, values, valid, 0.9, 0.8)
    expected = gae_reference(rewards, values, lengths, 0.9, 0.8)
    torch.testing.assert_close(adv, expected)
    torch.testing.assert_close(returns, (expected + values) * valid)
    # lambda = 1: the advantage is the discounted return-to-go minus the value
    adv1, _ = gae(rewards, values, valid, 0.9, 1.0)
    torch.testing.assert_close(adv1, gae_reference(rewards, values, lengths, 0.9, 1.0))


def recorded_episodes(task_id="harlow", episodes=3, seed=0, **model_kwargs):
    task = make_task(task_id)
    model = MetODS(ModelConfig(**({"n": 6, "depth": 2, "write": "linear"} | model_kwargs)), task.obs_dim,
                   task.num_actions)
    theta = model.init_params(torch.Generator().manual_seed(seed))
    theta = theta + 0.3 * torch.randn(theta.shape, generator=torch.Generator().manual_seed(seed + 1))
    with torch.no_grad():
        result = rollout(model, model.spec.unflatten(theta), task, episodes, torch.Generator().manual_seed(seed),
                         action_mode="sample", record=True)
    return model, theta, result


@pytest.mark.parametrize("variant", [{}, {"w0": "random"}, {"w0": "learnt", "write": "mlp", "depth": 3},
                                     {"write": "linear", "write_pre": "previous", "depth": 2},
                                     {"feedback": "diagonal", "write_pre": "previous", "depth": 1}])
def test_replay_reproduces_recorded_rollout(variant):
    model, theta, result = recorded_episodes(**variant)
    inputs = result.inputs
    with torch.no_grad():
        log_probs, values, entropies = replay(model, model.spec.unflatten(theta), make_task("harlow"),
                                              inputs["state0"], inputs["obs"], inputs["actions"], result.rewards)
    torch.testing.assert_close(log_probs, result.log_probs)
    torch.testing.assert_close(values, result.values)
    torch.testing.assert_close(entropies, result.entropies)
    # a subset of episodes replays on its own (PPO's minibatches)
    pick = torch.tensor([2, 0])
    with torch.no_grad():
        episodes = episodes_of(inputs, pick)
        sub, _, _ = replay(model, model.spec.unflatten(theta), make_task("harlow"), episodes["state0"],
                           episodes["obs"], episodes["actions"], result.rewards[:, :, pick])
    torch.testing.assert_close(sub, result.log_probs[:, :, pick])


def test_autograd_rollout_equals_no_grad_rollout():
    """A2C differentiates the rollout itself: with autograd on, it plays exactly the same episodes."""
    model, theta, result = recorded_episodes()
    with_grad = rollout(model, model.spec.unflatten(theta.clone().requires_grad_()), make_task("harlow"), 3,
                        torch.Generator().manual_seed(0), action_mode="sample", record=True)
    torch.testing.assert_close(with_grad.log_probs.detach(), result.log_probs)
    assert torch.equal(with_grad.inputs["actions"], result.inputs["actions"])


@pytest.mark.slow
@pytest.mark.parametrize("truncate", [0, 4])
def test_episode_loss_gradient_matches_finite_differences(truncate):
    """d(loss)/d(theta) through every plastic update of the episode (BPTT) against central differences, float64.

    The loss is the A2C loss of recorded episodes (fixed actions, advantages and returns), replayed with
    theta + h e_i. With ``truncate`` the autograd gradient is that of the truncated graph, so it must differ
    from finite differences exactly by the cut terms: checked against a truncated reference instead."""
    model, theta, result = recorded_episodes(episodes=2, seed=3)
    theta = theta.double()
    inputs = {k: v.double() if v.is_floating_point() else v for k, v in result.inputs.items() if k != "state0"}
    inputs["state0"] = {k: v.double() for k, v in result.inputs["state0"].items()}
    task = make_task("harlow")
    rewards = result.rewards.double()
    valid = result.valid[:, 0]
    mask = valid.double()
    pg = PGConfig(normalize_advantages=False)
    with torch.no_grad():
        _, values, _ = replay(model, model.spec.unflatten(theta), task, inputs["state0"], inputs["obs"],
                              inputs["actions"], rewards)
    adv, returns = gae(rewards[:, 0], values[:, 0], valid, 0.9, 0.95)

    def loss_of(th, cut=0):
        lp, v, ent = replay(model, model.spec.unflatten(th), task, inputs["state0"], inputs["obs"],
                            inputs["actions"], rewards, truncate=cut)
        return actor_critic_loss(pg, lp[:, 0], v[:, 0], ent[:, 0], adv, returns, mask)[0]

    th = theta.clone().requires_grad_()
    loss_of(th, truncate).backward()
    grad = th.grad
    if truncate:  # the truncated gradient differs from the full one (the cut is real) ...
        full = theta.clone().requires_grad_()
        loss_of(full).backward()
        assert not torch.allclose(full.grad, grad)
        return
    h = 1e-6
    checked = torch.randperm(len(theta), generator=torch.Generator().manual_seed(0))[:60]
    for i in checked.tolist():
        e = torch.zeros_like(theta)
        e[i] = h
        with torch.no_grad():
            fd = (loss_of(theta + e) - loss_of(theta - e)) / (2 * h)
        assert math.isclose(float(grad[i]), float(fd), rel_tol=1e-5, abs_tol=1e-8), (i, float(grad[i]), float(fd))
    # the plasticity coefficients get a gradient only through the plastic dynamics
    assert grad[plasticity_mask(model)].abs().sum() > 0


@pytest.mark.slow
def test_learnt_w0_gets_its_gradient_through_replay():
    """PPO replays recorded episodes from their (detached) start state; a learnt W0 is re-read from theta there
    (``MetODS.replay_state``), so the replayed loss has its true gradient for W0: checked against central finite
    differences (float64). Without it, w0=learnt trained exactly like w0=zero (the first maze ablation)."""
    model, theta, result = recorded_episodes(episodes=2, seed=3, w0="learnt")
    theta = theta.double()
    state0 = {k: v.double() for k, v in result.inputs["state0"].items()}
    obs, actions, rewards = result.inputs["obs"].double(), result.inputs["actions"], result.rewards.double()
    task = make_task("harlow")

    def loss_of(th):
        lp, v, _ = replay(model, model.spec.unflatten(th), task, state0, obs, actions, rewards)
        return (lp * rewards).sum() + v.square().sum()

    th = theta.clone().requires_grad_()
    loss_of(th).backward()
    w0 = model.spec.offsets()["w0"]
    assert th.grad[w0].abs().sum() > 0
    h = 1e-6
    for i in range(w0.start, w0.stop, 7):
        e = torch.zeros_like(theta)
        e[i] = h
        with torch.no_grad():
            fd = (loss_of(theta + e) - loss_of(theta - e)) / (2 * h)
        assert math.isclose(float(th.grad[i]), float(fd), rel_tol=1e-5, abs_tol=1e-8), (i, float(th.grad[i]), float(fd))


TINY = {"model.n": "8", "model.depth": "2", "eval_every": "2", "eval_episodes": "8", "final_eval_episodes": "8",
        "es.popsize": "8", "es.episodes": "2", "a2c.episodes": "8", "ppo.episodes": "8", "ppo.minibatches": "2",
        "ppo.epochs": "2"}


@pytest.mark.slow
@pytest.mark.parametrize("optimizer", ["a2c", "ppo"])
def test_gradient_trainer_state_dict_resumes_exactly(optimizer):
    cfg = make_config("harlow", optimizer, TINY | {"generations": "4"})
    a = make_trainer(cfg)
    rows_a = [a.step() for _ in range(4)]
    b = make_trainer(cfg)
    rows_b = [b.step() for _ in range(2)]
    c = make_trainer(cfg)
    c.load_state_dict(b.state_dict())
    rows_b += [c.step() for _ in range(2)]
    assert torch.equal(a.center(), c.center())
    assert [r["train/episode_return"] for r in rows_a] == [r["train/episode_return"] for r in rows_b]
    assert a.env_steps == c.env_steps > 0


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["sequential", "split"])
def test_hybrid_trainer(mode):
    cfg = make_config("harlow", "hybrid", TINY | {"generations": "4", "hybrid.mode": mode})
    trainer = make_trainer(cfg)
    start = trainer.center().clone()
    mask = plasticity_mask(trainer.model)
    rows = [trainer.step() for _ in range(2)]
    if mode == "sequential":
        assert [r["hybrid/phase"] for r in rows] == [0.0, 1.0]  # ES for half the generations, then gradient
    else:
        assert all(r["hybrid/phase"] == 2.0 for r in rows)
        assert not math.isnan(rows[0]["es/fitness_mean"]) and not math.isnan(rows[0]["pg/policy_loss"])
    moved = trainer.center() != start
    assert moved[mask].any() and moved[~mask].any()  # both halves of theta were trained
    assert set(rows[0]) == set(rows[1])  # one CSV header for the whole run
    # resume from the middle reproduces the uninterrupted run
    rows += [trainer.step() for _ in range(2)]
    again = make_trainer(cfg)
    [again.step() for _ in range(2)]
    state = again.state_dict()
    resumed = make_trainer(cfg)
    resumed.load_state_dict(state)
    [resumed.step() for _ in range(2)]
    assert torch.equal(resumed.center(), trainer.center())
    assert resumed.env_steps == trainer.env_steps
    trainer.close(), again.close(), resumed.close()


def test_split_hybrid_es_only_moves_plasticity():
    cfg = make_config("harlow", "hybrid", TINY | {"generations": "4", "hybrid.mode": "split"})
    trainer = HybridTrainer(cfg)
    mask = plasticity_mask(trainer.model)
    before = trainer.center()
    trainer.es.set_base(before)
    trainer.es.step()
    assert trainer.es.searcher.status["center"].shape[0] == int(mask.sum())
    trainer.close()


class TwoArmedBandit(Task):
    """Ten pulls of a two-armed bandit whose paying arm (+1; the other -1) is drawn per episode and hidden:
    the only way to beat chance is to remember, in the plastic weights, which arm paid."""

    obs_dim, num_actions, max_steps = 1, 2, 10

    def reset(self, num_envs, generator):
        good = torch.randint(0, 2, (num_envs,), generator=generator, device=self.device)
        return {"good": good, "t": torch.zeros(num_envs, dtype=torch.long)}, torch.ones(num_envs, 1)

    def step(self, state, action, generator):
        t = state["t"] + 1
        reward = (action == state["good"]).float() * 2 - 1
        return {**state, "t": t}, torch.ones(len(action), 1), reward, t >= self.max_steps


@pytest.mark.slow
@pytest.mark.parametrize("optimizer, updates, floor", [("a2c", 200, 3.0), ("ppo", 40, 5.0)])
def test_policy_gradient_learns_to_remember_through_plasticity(bandit_task, optimizer, updates, floor):
    """Chance is 0 and a perfect agent earns 9 (only the first pull is a guess): with the default settings the
    plastic agent must learn to stay on the arm that paid, a memory held in its plastic weights alone."""
    cfg = make_config(bandit_task, optimizer, {"model.n": "8", "model.depth": "2", f"{optimizer}.episodes": "64",
                                               "generations": str(updates)})
    trainer = make_trainer(cfg)
    for _ in range(updates):
        trainer.step()
    with torch.no_grad():
        result = rollout(trainer.model, trainer.params(), trainer.task, 500, torch.Generator().manual_seed(99))
    assert float(result.returns.mean()) > floor


@pytest.mark.slow
def test_trainers_log_the_saturation_of_the_batch_final_plastic_state():
    cfg = make_config("harlow", "ppo", TINY | {"generations": "2", "model.plastic_bound": "0.02"})
    trainer = make_trainer(cfg)
    result = rollout(trainer.model, trainer.params(), trainer.task, 8, torch.Generator().manual_seed(0),
                     action_mode="sample", record=True, trace=True)
    w = result.model_state["W"]
    assert torch.equal(w, result.trace["W"][-1])  # the state after the last step, every agent (no compaction)
    stats = trainer.model.state_stats(result.model_state)
    entries = [abs(x) for x in w.flatten().tolist()]
    assert float(stats["plastic/mean_abs_w"]) == pytest.approx(sum(entries) / len(entries), rel=1e-5)
    bound = torch.tensor(0.02).item()  # W is float32: its clip is 0.02 rounded to float32
    at_bound = sum(x >= bound for x in entries) / len(entries)
    assert 0 < at_bound < 1 and float(stats["plastic/w_at_bound"]) == pytest.approx(at_bound)
    row = trainer.step()
    assert 0 < row["plastic/w_at_bound"] < 1 and 0 < row["plastic/mean_abs_w"] <= 0.02
    unclipped = make_config("harlow", "a2c", TINY | {"generations": "2", "model.plastic_bound": "0"})
    row = make_trainer(unclipped).step()
    assert math.isnan(row["plastic/w_at_bound"]) and row["plastic/mean_abs_w"] > 0
    rl2 = make_trainer(make_config("harlow", "ppo", TINY | {"generations": "2", "model.kind": "rl2"}))
    assert not any(key.startswith("plastic/") for key in rl2.step())  # a GRU has no plastic memory to report
