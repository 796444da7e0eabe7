"""The GPU path against the CPU reference (skipped without CUDA; benchmarks/gpu_check.sh runs it on a GPU).

CPU and CUDA generators draw different numbers from the same seed, so a GPU run cannot be compared with a
CPU run of the same seed. Instead each test replays on the CPU exactly what the GPU saw: the same reset
states, the same step noise (captured from the GPU task) and the same actions, and checks that model
outputs, observations and rewards agree.
"""

import importlib.util
from pathlib import Path

import pytest
import torch

from metods_evo.config import RunConfig, apply_overrides
from metods_evo.evaluate import evaluate_theta
from metods_evo.models import build_model
from metods_evo.optimizers.es import ESTrainer
from metods_evo.rollout import replay, rollout, tile
from metods_evo.tasks import make_task

pytestmark = pytest.mark.gpu  # skipped without CUDA (tests/conftest.py)


def config(task: str, **overrides) -> RunConfig:
    cfg = RunConfig(task=task)
    base = {"model.n": "12", "model.depth": "3", "es.popsize": "16", "es.episodes": "4"}
    apply_overrides(cfg, base | {k: str(v) for k, v in overrides.items()}, {})
    return cfg


def to_cpu(tree: dict) -> dict:
    return {k: v.cpu() for k, v in tree.items()}


class Recorder:
    """Wraps a task's ``reset`` and ``uniform`` to keep (``record``) or hand back (``play``) their outputs."""

    def __init__(self, task, tape: dict | None = None):
        self.task, self.record = task, tape is None
        self.tape = {"reset": [], "uniform": []} if tape is None else {k: list(v) for k, v in tape.items()}
        self.reset, self.uniform = task.reset, task.uniform
        task.reset, task.uniform = self._reset, self._uniform

    def _reset(self, num_envs, generator):
        if self.record:
            out = self.reset(num_envs, generator)
            self.tape["reset"].append((to_cpu(out[0]), out[1].cpu()))
            return out
        return self.tape["reset"].pop(0)

    def _uniform(self, state, generator, *shape):
        if self.record:
            out = self.uniform(state, generator, *shape)
            self.tape["uniform"].append(out.cpu())
            return out
        return self.tape["uniform"].pop(0)


@pytest.mark.parametrize("task_id,write", [("harlow", "hebbian"), ("harlow", "linear"), ("maze", "linear"),
                                           ("maze", "mlp")])
def test_cuda_rollout_equals_cpu_replay(task_id, write):
    """Model on the GPU = model on the CPU (through ``replay``), and the task's transitions agree step by step."""
    cfg = config(task_id, **{"model.write": write})
    gpu_task, cpu_task = make_task(task_id, device="cuda"), make_task(task_id)
    model = build_model(cfg, cpu_task)
    gen = torch.Generator().manual_seed(0)
    theta = model.init_params(gen) + 0.3 * torch.randn(3, model.num_params, generator=gen)
    recorder = Recorder(gpu_task)
    result = rollout(model, model.spec.unflatten(theta.cuda()), gpu_task, 5, torch.Generator("cuda").manual_seed(1),
                     action_mode="sample", record=True)
    inputs, rewards = result.inputs, result.rewards.cpu()
    gpu = (result.log_probs.cpu(), result.values.cpu(), result.entropies.cpu())
    # Reference: the same episodes replayed on the CPU in float64. The chaotic plastic dynamics amplify float32
    # rounding over an episode, so the GPU must be as close to it as the CPU's own float32 replay is (4x margin).
    cpu32 = replay(model, model.spec.unflatten(theta), cpu_task, to_cpu(inputs["state0"]), inputs["obs"].cpu(),
                   inputs["actions"].cpu(), rewards)
    exact = replay(model, model.spec.unflatten(theta.double()), cpu_task,
                   {k: v.cpu().double() for k, v in inputs["state0"].items()}, inputs["obs"].cpu().double(),
                   inputs["actions"].cpu(), rewards.double())
    for name, g, c, e in zip(("log-probs", "values", "entropies"), gpu, cpu32, exact, strict=True):
        gpu_error, cpu_error = (g.double() - e).abs().max(), (c.double() - e).abs().max()
        assert gpu_error <= 4 * cpu_error + 1e-5, (name, float(gpu_error), float(cpu_error))
        torch.testing.assert_close(g, c, rtol=1e-3, atol=1e-3)

    Recorder(cpu_task, recorder.tape)  # the CPU task now replays the GPU's reset and step noise
    state, obs = cpu_task.reset(5, None)
    state, obs = tile(state, 3), obs.repeat(3, 1)
    alive = torch.ones(3 * 5, dtype=torch.bool)
    for t in range(rewards.shape[0]):
        torch.testing.assert_close(obs.view(3, 5, -1), inputs["obs"][t].cpu(), rtol=0, atol=0)
        state, obs, reward, done = cpu_task.step(state, inputs["actions"][t].cpu().reshape(-1), None)
        torch.testing.assert_close((reward * alive).view(3, 5), rewards[t], rtol=0, atol=0)
        alive &= ~done
    assert int(result.lengths.sum()) == result.env_steps > 0


@pytest.mark.parametrize("task_id", ["harlow", "maze"])
def test_cuda_generation_is_deterministic_and_finite(task_id):
    """A GPU generation from the same seed gives the same fitnesses; nothing leaves the GPU but the scores."""
    fitness = []
    for _ in range(2):
        trainer = ESTrainer(config(task_id, device="cuda"))
        metrics = trainer.step()
        fitness.append(trainer.searcher.population.evals[:, 0].cpu())
        assert trainer.searcher.population.values.device.type == "cuda"
        assert all(torch.isfinite(torch.tensor(v)) for v in metrics.values())
    torch.testing.assert_close(fitness[0], fitness[1], rtol=0, atol=0)


@pytest.mark.slow
def test_cuda_es_learns_maze_exploration():
    """The CPU suite's learning check (tests/test_es.py::test_es_learns_maze_exploration), on the GPU."""
    cfg = config("maze", device="cuda", **{"model.n": 16, "model.depth": 1, "es.popsize": 64, "es.episodes": 8,
                                           "es.center_lr": 0.1, "es.sigma_init": 0.2, "es.action_mode": "sample"})
    before = evaluate_theta(cfg, ESTrainer(cfg).center(), 64, seed=99)["metrics"]["return"]["mean"]
    trainer = ESTrainer(cfg)
    for _ in range(15):
        trainer.step()
    after = evaluate_theta(cfg, trainer.center(), 64, seed=99)["metrics"]["return"]["mean"]
    assert after >= 2 * before and after >= before + 4, (before, after)


def count_syncs(fn) -> int:
    """Operations in ``fn()`` that make the host wait for the GPU: the benchmark's counter (sync debug mode)."""
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "es_generation.py"
    spec = importlib.util.spec_from_file_location("es_generation", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.count_syncs(torch.device("cuda"), fn)


@pytest.mark.parametrize("task_id", ["harlow", "maze"])
def test_cuda_rollout_has_no_host_round_trip_per_step(task_id):
    """The step loop asks the GPU "all done?" only every 8 steps and nothing else in a step waits for it.

    The reset may sync (the maze generator's index assignments do, once per rollout), so its syncs, counted
    separately, are allowed on top of the loop's T / 8 checks and the final step count."""
    cfg = config(task_id)
    task = make_task(task_id, device="cuda")
    model = build_model(cfg, task)
    params = model.spec.unflatten(model.init_params(torch.Generator().manual_seed(0)).expand(4, -1).cuda())
    reset_syncs = count_syncs(lambda: task.reset(8, torch.Generator("cuda").manual_seed(0)))
    result = {}

    def run() -> None:
        with torch.no_grad():
            result["r"] = rollout(model, params, task, 8, torch.Generator("cuda").manual_seed(0))

    syncs = count_syncs(run)
    steps = result["r"].rewards.shape[0]
    assert steps > 8 and syncs <= reset_syncs + steps // 8 + 2, (syncs, reset_syncs, steps)
