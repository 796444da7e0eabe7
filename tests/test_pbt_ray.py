"""PBT's members in groups (optimizers/pbt.py ``MemberGroup``, optimizers/pbt_ray.py): a population split into groups
trains float for float as one batch, a lost group costs its members only, and the same over Ray actors.

The fast tests split the members over groups of this process (``SplitPool``, the interface of ``RayPool`` without
Ray); the slow ones start a local Ray instance (~10-20 s) and its actors (each imports torch and the package: ~10 s,
more on a loaded machine).
"""

import logging
import math

import pytest
import torch
from helpers import local_ray_instance

from metods_evo.config import make_config
from metods_evo.optimizers.pbt import MemberGroup, PBTTrainer
from metods_evo.runs import RunError

pytestmark = pytest.mark.usefixtures("work_in_tmp")

# harlow's episodes end at different steps, so each group's rollout runs for as long as its own longest episode
SMALL = {"model.n": "4", "model.depth": "1", "ppo.episodes": "4", "ppo.minibatches": "2", "ppo.epochs": "2",
         "pbt.members": "4", "pbt.interval": "2", "generations": "6"}
TIMINGS = ("perf/generation_s", "perf/steps_per_s")
MEMORY = ("plastic/mean_abs_w", "plastic/w_at_bound")  # of the batch's last step: later for a longer batch


def comparable(row: dict[str, float]) -> dict[str, float]:
    """A metrics row without timings and the memory statistics, which read the plastic state at the last step of
    the group's rollout (members keep stepping until their group's longest episode ends)."""
    return {key: value for key, value in row.items() if key not in TIMINGS + MEMORY}


def same_state(a: dict, b: dict) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same_state(a[key], b[key]) for key in a)
    return torch.equal(a, b) if isinstance(a, torch.Tensor) else a == b


class SplitPool:
    """The members in groups of this process, ``rows`` each; ``lose(i)`` makes group i answer as a dead actor."""

    def __init__(self, cfg, rows: list[slice]):
        self.rows, self.groups = rows, [MemberGroup(cfg) for _ in rows]
        self.lost: set[int] = set()
        self.failure = ""

    def load(self, members, alive):
        for rows, group in zip(self.rows, self.groups):
            group.load({name: value[rows].clone() for name, value in members.items()})

    def update(self, generation, lr_factor, alive):
        return [(rows, None if i in self.lost else group.update(generation, lr_factor))
                for i, (rows, group) in enumerate(zip(self.rows, self.groups))]

    def lose(self, i: int) -> None:
        self.lost.add(i)
        self.failure = f"group {i} lost"

    def close(self):
        pass


def split_trainer(cfg, rows: list[slice]) -> PBTTrainer:
    trainer = PBTTrainer(cfg)
    trainer.pool = SplitPool(cfg, rows)
    trainer.pool_current = False
    return trainer


def test_members_in_groups_train_like_one_batch():
    """Groups of 1 and 3 members against all 4 in one batch, over updates that include two exploit steps (which
    copy members across the groups): the same floats."""
    cfg = make_config("harlow", "pbt", SMALL)
    whole, split = PBTTrainer(cfg), split_trainer(cfg, [slice(0, 1), slice(1, 4)])
    for _ in range(4):
        assert comparable(whole.step()) == comparable(split.step())
    assert same_state(whole.state_dict(), split.state_dict())
    assert whole.alive.all() and not torch.equal(whole.theta, PBTTrainer(cfg).theta)


def test_a_lost_group_costs_its_members_only():
    """Group 1 (members 2, 3) is lost after an update: the others go on training and exploiting among themselves,
    the dead ones keep their last state and never win center(); a resume keeps them dead and continues exactly;
    losing the last group stops the run with one error."""
    cfg = make_config("harlow", "pbt", SMALL)
    trainer = split_trainer(cfg, [slice(0, 2), slice(2, 4)])
    assert trainer.step()["pbt/members_alive"] == 4
    trainer.pool.lose(1)
    before = trainer.theta.clone()
    row = trainer.step()  # generation 2: an exploit step, between members 0 and 1 only
    assert row["pbt/members_alive"] == 2 and row["pbt/exploit"] == 1.0
    assert trainer.alive.tolist() == [True, True, False, False]
    assert torch.equal(trainer.theta[2:], before[2:]) and not torch.equal(trainer.theta[:2], before[:2])
    assert math.isfinite(row["train/episode_return"]) and math.isfinite(row["pg/policy_loss"])
    assert trainer.score[2:].tolist() == [-math.inf, -math.inf] and int(trainer.score.argmax()) < 2
    state = trainer.state_dict()
    resumed = split_trainer(cfg, [slice(0, 2), slice(2, 4)])  # fresh groups: every member could train again
    resumed.load_state_dict(state)
    for _ in range(2):
        assert comparable(trainer.step()) == comparable(resumed.step())
    assert same_state(trainer.state_dict(), resumed.state_dict())
    trainer.pool.lose(0)
    with pytest.raises(RunError, match="every PBT member's Ray actor is lost.*group 0 lost"):
        trainer.step()


# ---------------------------------------------------------------------------------------------- over Ray actors
@pytest.fixture(scope="module")
def local_ray():
    """3 logical CPUs: the shared pair of actors holds 2 while the resume test starts a third (idle actors cost no
    core)."""
    yield from local_ray_instance(3)


@pytest.fixture(scope="module")
def two_actors(local_ray):
    """4 updates (2 exploit steps) of 4 members on two actors (members 0-1 and 2-3) and in one process: the trainers,
    their metrics rows and the actors' checkpoint after 2 updates. Shared by this module's tests, which start no
    other pair of actors (each start is the slow part); the last test kills these actors."""
    torch.set_num_threads(1)
    local = PBTTrainer(make_config("harlow", "pbt", SMALL))
    remote = PBTTrainer(make_config("harlow", "pbt", SMALL | {"pbt.num_actors": "2"}))
    rows = [comparable(local.step()) for _ in range(4)]
    remote_rows = [comparable(remote.step()) for _ in range(2)]
    halfway = remote.state_dict()
    remote_rows += [comparable(remote.step()) for _ in range(2)]
    yield local, remote, rows, remote_rows, halfway
    remote.close()


@pytest.mark.slow
def test_two_actors_train_like_one_process(two_actors):
    local, remote, rows, remote_rows, _ = two_actors
    assert remote.pool.rows == [slice(0, 2), slice(2, 4)] and all(actor is not None for actor in remote.pool.actors)
    assert remote_rows == rows and same_state(remote.state_dict(), local.state_dict())


@pytest.mark.slow
def test_resume_on_a_fresh_actor_continues_exactly(two_actors):
    """The two actors' checkpoint after 2 updates, loaded by a trainer with one fresh actor, continues to the same
    floats as the uninterrupted run."""
    local, _, rows, _, halfway = two_actors
    resumed = PBTTrainer(make_config("harlow", "pbt", SMALL | {"pbt.num_actors": "1"}))
    try:
        resumed.load_state_dict(halfway)
        assert [comparable(resumed.step()) for _ in range(2)] == rows[2:]
        assert same_state(resumed.state_dict(), local.state_dict())
    finally:
        resumed.close()


@pytest.mark.slow
def test_a_killed_actor_costs_its_members_not_the_run(two_actors, local_ray, caplog):
    """``ray.kill`` of the second actor: its members are dead from then on, the first actor's go on (and the
    driver's checkpoint continues exactly without any actor); killing the last stops the run."""
    _, remote, _, _, _ = two_actors
    local_ray.kill(remote.pool.actors[1])
    before = remote.theta.clone()
    with caplog.at_level(logging.WARNING, logger="metods_evo.optimizers.pbt_ray"):
        row = remote.step()
    assert "members 2-3" in caplog.text and remote.pool.actors[1] is None
    assert row["pbt/members_alive"] == 2 and remote.alive.tolist() == [True, True, False, False]
    assert torch.equal(remote.theta[2:], before[2:]) and not torch.equal(remote.theta[:2], before[:2])
    local = PBTTrainer(make_config("harlow", "pbt", SMALL))  # the checkpoint needs no actor to go on
    local.load_state_dict(remote.state_dict())
    assert comparable(local.step()) == comparable(remote.step())  # generation 6: an exploit step among 0 and 1
    assert same_state(local.state_dict(), remote.state_dict())
    local_ray.kill(remote.pool.actors[0])
    with pytest.raises(RunError, match="every PBT member's Ray actor is lost"):
        remote.step()
