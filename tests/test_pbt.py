"""Population-based training (optimizers/pbt.py): the batched members against lone PPO runs, the per-member Adam
against torch's, exploit / explore, exact resume, the command line, and a short run that must learn."""

import json

import pytest
import torch
from helpers import cli, refused

from metods_evo.config import PBTConfig, generation_seed, make_config
from metods_evo.optimizers.pbt import HYPERPARAMETERS, ORDER_STREAM, PBTTrainer, adam, adam_state, exploit
from metods_evo.optimizers.ppo import PPOTrainer
from metods_evo.rollout import rollout
from metods_evo.train import make_trainer

pytestmark = pytest.mark.usefixtures("work_in_tmp")

SMALL = {"model.n": "4", "model.depth": "1", "ppo.episodes": "4", "ppo.minibatches": "2", "ppo.epochs": "2",
         "pbt.members": "3"}


@pytest.mark.slow
def test_members_train_exactly_as_lone_ppo_runs(bandit_task, monkeypatch):
    """With exploit out of reach (interval > the run), member k is a PPO run from its own theta with its own
    hyperparameters on the same episodes (common random numbers) and the same minibatch order (PBT draws it from a
    stream of its own, ORDER_STREAM: the lone runs are given it too): its theta after 3 updates is that run's. A
    small target_kl stops members at different epochs, so the per-member early stop is exercised too."""
    cfg = make_config(bandit_task, "pbt", SMALL | {"generations": "3", "pbt.interval": "100", "ppo.epochs": "4",
                                                   "ppo.target_kl": "0.0005"})
    pbt = PBTTrainer(cfg)
    start, hypers = pbt.theta.clone(), {k: v.clone() for k, v in pbt.hypers.items()}
    assert all(float(hypers[name][0]) == getattr(cfg.ppo, name) for name in HYPERPARAMETERS)  # member 0: as given
    assert all(len(set(hypers[name].tolist())) == cfg.pbt.members for name in HYPERPARAMETERS)
    updates, group = [], pbt.pool.group
    update = group.update
    group.update = lambda *args: (out := update(*args), updates.append(out[2]["pg/updates"]))[0]
    for _ in range(3):
        pbt.step()
    updates = torch.stack(updates)  # [update, member]: each member's minibatch steps
    assert not (updates == updates[:, :1]).all()  # the members stopped at different epochs
    randperm, orders = torch.randperm, {}

    def pbt_order(n, *, generator, device):  # the lone run's minibatch order: PBT's stream of this update
        if ppo.generation not in orders:
            orders[ppo.generation] = torch.Generator().manual_seed(generation_seed(cfg.seed, ppo.generation,
                                                                                   ORDER_STREAM))
        return randperm(n, generator=orders[ppo.generation], device=device)

    monkeypatch.setattr(torch, "randperm", pbt_order)
    for k in range(cfg.pbt.members):
        lone = make_config(bandit_task, "ppo", SMALL | {"generations": "3", "ppo.epochs": "4",
                                                      "ppo.target_kl": "0.0005"})
        for name in HYPERPARAMETERS:
            setattr(lone.ppo, name, float(hypers[name][k]))
        ppo, orders = PPOTrainer(lone, theta=start[k]), {}
        rows = [ppo.step() for _ in range(3)]
        assert [row["pg/updates"] for row in rows] == updates[:, k].tolist()
        torch.testing.assert_close(pbt.theta[k], ppo.center(), rtol=1e-5, atol=1e-6)


def test_adam_with_a_learning_rate_per_member_is_torch_adam_per_member():
    generator = torch.Generator().manual_seed(0)
    theta = torch.randn(3, 5, generator=generator)
    lr = torch.tensor([1e-3, 3e-2, 0.2], dtype=torch.float64)
    grads = [torch.randn(3, 5, generator=generator) for _ in range(4)]
    active = [torch.tensor([True, True, True]), torch.tensor([True, False, True]), torch.tensor([False, True, True]),
              torch.tensor([True, True, True])]
    ours, state = theta.clone(), adam_state(theta)
    for grad, on in zip(grads, active):
        ours, state = adam(ours, grad, state, lr.view(3, 1), on, eps=1e-5)
    for k in range(3):
        param = torch.nn.Parameter(theta[k].clone())
        reference = torch.optim.Adam([param], lr=float(lr[k]), eps=1e-5)
        for grad, on in zip(grads, active):
            if on[k]:  # an inactive member takes no step at all
                param.grad = grad[k].clone()
                reference.step()
        torch.testing.assert_close(ours[k], param.detach(), rtol=1e-6, atol=1e-7)
        kept = reference.state[param]
        assert float(state["step"][k]) == float(kept["step"])
        torch.testing.assert_close(state["exp_avg"][k], kept["exp_avg"], rtol=1e-6, atol=1e-9)
        torch.testing.assert_close(state["exp_avg_sq"][k], kept["exp_avg_sq"], rtol=1e-6, atol=1e-12)


def test_exploit_copies_a_top_member_and_perturbs_its_hyperparameters():
    k, d, perturb = 8, 5, PBTConfig().perturb
    members = {"theta": torch.arange(k * d, dtype=torch.float32).view(k, d),
               "adam.step": torch.arange(k, dtype=torch.float32) + 10,
               "adam.exp_avg": -torch.arange(k * d, dtype=torch.float32).view(k, d),
               "lr": torch.linspace(1e-3, 8e-3, k, dtype=torch.float64),
               "value_coef": torch.linspace(0.1, 0.8, k, dtype=torch.float64)}
    bounds = {"lr": (1e-4, 1e-1), "value_coef": (0.0, 10.0)}
    score = torch.tensor([3.0, 0.0, 5.0, 1.0, 5.0, -1.0, 2.0, 4.0], dtype=torch.float64)
    out, source = exploit(members, score, 0.25, perturb, bounds, torch.Generator().manual_seed(1))
    top, bottom = {2, 4}, {5, 1}  # 4 ties with 2 and ranks below it; the bottom quarter: 5 (-1.0), 1 (0.0)
    assert all(int(source[i]) in top for i in bottom)
    assert all(int(source[i]) == i for i in set(range(k)) - bottom)
    for i in range(k):
        s = int(source[i])
        for name in ("theta", "adam.step", "adam.exp_avg"):
            assert torch.equal(out[name][i], members[name][s])
        for name in bounds:
            factor = float(out[name][i] / members[name][s])
            if i in bottom:
                assert min(abs(factor - 1 / perturb), abs(factor - perturb)) < 1e-12
            else:
                assert factor == 1.0
    again, _ = exploit(members, score, 0.25, perturb, bounds, torch.Generator().manual_seed(1))
    assert all(torch.equal(again[name], out[name]) for name in out)  # the draws are the generator's
    clipped, _ = exploit(members | {"lr": torch.full((k,), 0.099, dtype=torch.float64)}, score, 0.25, 2.0, bounds,
                         torch.Generator().manual_seed(3))
    assert clipped["lr"].max() <= 0.1  # explore stays within the bounds


def test_the_trainer_exploits_every_interval(bandit_task):
    cfg = make_config(bandit_task, "pbt", SMALL | {"generations": "4", "pbt.interval": "2", "pbt.members": "4",
                                                   "ppo.epochs": "1", "ppo.minibatches": "1"})
    trainer = make_trainer(cfg)
    rows = [trainer.step() for _ in range(2)]
    assert [row["pbt/exploit"] for row in rows] == [0.0, 1.0] and rows[1]["pbt/members_alive"] == 4
    assert trainer.interval_count == 0 and trainer.score.shape == (4,)
    assert torch.equal(trainer.center(), trainer.theta[int(trainer.score.argmax())])
    copied = [i for i in range(4) if any(torch.equal(trainer.theta[i], trainer.theta[j]) for j in range(4) if j != i)]
    assert len(copied) == 2  # the worst member now holds the theta of one of the best
    keys = {"train/episode_return", "pbt/best_return", "pbt/lr_min", "pbt/lr_max", "pbt/members_alive",
            "perf/generation_s", "perf/steps_per_s", "pg/policy_loss", "pg/approx_kl", "pg/grad_norm", "pg/lr"}
    assert keys <= set(rows[0]) and set(rows[0]) == set(rows[1])


@pytest.mark.slow
def test_resume_continues_exactly(bandit_task):
    cfg = make_config(bandit_task, "pbt", SMALL | {"generations": "4", "pbt.interval": "1"})
    straight = make_trainer(cfg)
    rows = [straight.step() for _ in range(4)]
    first = make_trainer(cfg)
    resumed_rows = [first.step() for _ in range(2)]
    state = first.state_dict()
    resumed = make_trainer(cfg)
    resumed.load_state_dict(state)
    resumed_rows += [resumed.step() for _ in range(2)]
    assert torch.equal(resumed.theta, straight.theta) and torch.equal(resumed.center(), straight.center())
    assert all(torch.equal(resumed.hypers[k], straight.hypers[k]) for k in HYPERPARAMETERS)
    drop = ("perf/generation_s", "perf/steps_per_s")
    assert [{k: v for k, v in r.items() if k not in drop} for r in resumed_rows] == \
           [{k: v for k, v in r.items() if k not in drop} for r in rows]
    assert torch.equal(PBTTrainer.center_of(straight.state_dict()), straight.center())


@pytest.mark.slow
def test_cli_trains_and_evaluates(tmp_path):
    out = tmp_path / "run"
    result = cli("train", "--task", "harlow", "--optimizer", "pbt", "--generations", "2", "--set", "pbt.members=4",
                 "--set", "ppo.episodes=8", "--set", "eval_every=1", "--set", "eval_episodes=8", "--set",
                 "final_eval_episodes=8", "--set", "model.n=8", "--out", out, "--no-progress")
    assert result.exit_code == 0, result.output
    assert (out / "agent.pt").is_file() and (out / "checkpoint.pt").is_file()
    report = json.loads(cli("evaluate", out, "--episodes", "8", "--json").output)
    assert report["action_mode"] == "sample" and "return" in report["metrics"]


def test_cli_refuses_a_population_of_one(tmp_path):
    refused(cli("train", "--task", "harlow", "--optimizer", "pbt", "--set", "pbt.members=1", "--out",
                tmp_path / "run"), "pbt.members")


@pytest.mark.slow
def test_pbt_learns_to_remember_through_plasticity(bandit_task):
    """test_gradient.py's bandit (chance 0, a perfect agent 9): PBT's leader, after as many updates as the PPO
    test, must clear the same floor."""
    cfg = make_config(bandit_task, "pbt", {"model.n": "8", "model.depth": "2", "ppo.episodes": "64",
                                           "pbt.members": "4", "pbt.interval": "5", "generations": "40"})
    trainer = make_trainer(cfg)
    for _ in range(40):
        trainer.step()
    params = trainer.model.spec.unflatten(trainer.center())
    with torch.no_grad():
        result = rollout(trainer.model, params, trainer.task, 500, torch.Generator().manual_seed(99))
    assert float(result.returns.mean()) > 5.0
