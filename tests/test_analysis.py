"""`metods-evo analyze`: the figures of a trained run, and the numbers behind them against direct computations."""

import json

import pytest
import torch
from helpers import cli

from metods_evo import analysis
from metods_evo.agent import load_agent
from metods_evo.config import ConfigError, ModelConfig
from metods_evo.models import MetODS
from metods_evo.tasks import make_task

torch.set_num_threads(1)

TINY = ["--generations", "2", "--popsize", "8", "--set", "es.episodes=2", "--set", "model.n=6",
        "--set", "model.depth=2", "--set", "eval_episodes=8", "--set", "final_eval_episodes=8",
        "--set", "eval_every=2", "--no-progress"]
FIGURES = ("w_pca.png", "energy.png", "delta_w.png", "reward_per_step.png", "saturation.png")



def trained_run(tmp_path_factory, task):
    out = tmp_path_factory.mktemp(task) / "run"
    result = cli("train", "--task", task, "--out", out, *TINY)
    assert result.exit_code == 0, result.stderr
    return out


@pytest.fixture(scope="module")
def harlow_run(tmp_path_factory):
    return trained_run(tmp_path_factory, "harlow")


def harlow_episodes(run, episodes=48, seed=3):
    agent = load_agent(run)
    task = make_task("harlow")
    return analysis.collect(agent.model, agent.params, task, episodes, seed, agent.cfg.action_mode())


def assert_real_png(path):
    import matplotlib.image

    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000, path
    assert matplotlib.image.imread(path)[..., :3].std() > 0.05, f"{path} looks blank"


@pytest.mark.slow
def test_analyze_harlow_writes_figures_and_the_numbers_behind_them(harlow_run, tmp_path):
    out = tmp_path / "figures"
    result = cli("analyze", harlow_run, "--out", out, "--episodes", 48, "--seed", 3)
    assert result.exit_code == 0, result.stderr
    assert result.stdout.split() == [str(out / name) for name in (*FIGURES, "analysis.json")]
    for name in FIGURES:
        assert_real_png(out / name)
    report = json.loads((out / "analysis.json").read_text())

    data = harlow_episodes(harlow_run)  # the same episodes: same seed and count
    ratio = report["w_pca"]["explained_variance_ratio"]
    assert len(ratio) == 3 and 1 >= ratio[0] >= ratio[1] >= ratio[2] >= 0 and sum(ratio) <= 1 + 1e-9
    assert sum(report["w_pca"]["first_choice_counts"].values()) == 48
    assert report["w_pca"]["first_choice_counts"]["first choice correct"] == int(data.metrics["trial1_correct"].sum())
    assert report["return"]["mean"] == pytest.approx(float(data.metrics["return"].mean()))
    change = analysis.weight_change(data.W, data.W0)[data.valid]
    rewarded = analysis.reward_inputs(data.rewards)[data.valid] != 0
    assert report["delta_w"]["mean_rewarded"] == pytest.approx(float(change[rewarded].mean()))
    assert report["delta_w"]["mean_unrewarded"] == pytest.approx(float(change[~rewarded].mean()))
    assert report["reward_per_step"]["mean"] == pytest.approx(data.rewards.double().mean(1).tolist())
    energy = report["energy"]
    assert energy["steps"][0] == 0 and energy["steps"][-1] == int(data.lengths[report["example_episode"]]) - 1
    assert all(low <= high for low, high in zip(energy["min"], energy["max"]))


@pytest.mark.slow
def test_default_output_goes_into_the_run(harlow_run):
    result = cli("analyze", harlow_run, "--episodes", 4)
    assert result.exit_code == 0, result.stderr
    assert all((harlow_run / "analysis" / name).is_file() for name in (*FIGURES, "analysis.json"))


@pytest.mark.slow
def test_last_agent_is_analyzed_on_request(harlow_run, tmp_path):
    result = cli("analyze", harlow_run, "--agent", "last", "--out", tmp_path / "last", "--episodes", 6, "--seed", 3)
    assert result.exit_code == 0, result.stderr
    report = json.loads((tmp_path / "last" / "analysis.json").read_text())
    last = load_agent(harlow_run, agent="last")
    data = analysis.collect(last.model, last.params, make_task("harlow"), 6, 3, last.cfg.action_mode())
    assert report["agent"] == "last" and report["return"]["mean"] == pytest.approx(float(data.metrics["return"].mean()))


@pytest.mark.parametrize("depth, write, w0, action_mode, write_pre, feedback", [
    (1, "hebbian", "zero", "greedy", "current", "none"), (3, "linear", "learnt", "sample", "current", "none"),
    (2, "mlp", "random", "sample", "current", "none"), (2, "linear", "learnt", "greedy", "previous", "none"),
    (1, "hebbian", "zero", "greedy", "previous", "diagonal")])
def test_recomputed_plastic_state_equals_the_traced_one(depth, write, w0, action_mode, write_pre, feedback):
    """v is not traced: it is recomputed with the model's own functions. The same computation must give back the
    traced W bit for bit, and v must be what the policy read (its greedy actions are the traced ones)."""
    task = make_task("harlow")
    model = MetODS(ModelConfig(n=6, depth=depth, write=write, w0=w0, write_pre=write_pre, feedback=feedback),
                   task.obs_dim, task.num_actions)
    generator = torch.Generator().manual_seed(depth)
    theta = model.init_params(generator) + 0.3 * torch.randn(model.num_params, generator=generator)
    params = model.spec.unflatten(theta.unsqueeze(0))
    data = analysis.collect(model, params, task, 16, seed=7, action_mode=action_mode)
    from metods_evo.rollout import rollout

    traced = rollout(model, params, task, 16, torch.Generator().manual_seed(7), action_mode=action_mode, trace=True)
    v0, v, w = analysis.replay_plastic(model, params, data.W0.unsqueeze(0), torch.stack(traced.trace["obs"]),
                                       torch.stack(traced.trace["action"]), traced.rewards)
    assert torch.equal(w, torch.stack(traced.trace["W"]))
    assert torch.equal(data.W, w[:, 0]) and torch.equal(data.v, v[:, 0]) and torch.equal(data.v0, v0[:, 0])
    assert data.W.abs().max() > 0 and data.W0.shape == (16, 6, 6)
    if action_mode == "greedy":
        greedy = torch.stack([model.heads(params, v_t)[0].argmax(-1) for v_t in v])
        assert torch.equal(greedy, torch.stack(traced.trace["action"]))


@pytest.mark.slow
def test_weight_change_and_energy_equal_direct_computations(harlow_run):
    data = harlow_episodes(harlow_run, episodes=8)
    change = analysis.weight_change(data.W, data.W0)
    for t in range(data.W.shape[0]):
        for e in range(8):
            before = data.W0[e] if t == 0 else data.W[t - 1, e]
            direct = sum(abs(float(data.W[t, e, i, j] - before[i, j])) for i in range(6) for j in range(6))
            assert float(change[t, e]) == pytest.approx(direct, rel=1e-5, abs=1e-6)

    generator = torch.Generator().manual_seed(0)
    w = torch.randn(3, 5, 5, dtype=torch.float64, generator=generator)
    v1, v2 = torch.randn(2, 3, 5, dtype=torch.float64, generator=generator)
    energy = analysis.hopfield_energy(w, v1, v2)
    for b in range(3):
        direct = -sum(float(v1[b, i] * w[b, i, j] * v2[b, j]) for i in range(5) for j in range(5))
        assert float(energy[b]) == pytest.approx(direct, abs=1e-12)
    grid = torch.randn(4, 4, 5, dtype=torch.float64, generator=generator)  # one W over a grid of v, as in the figure
    direct = -torch.einsum("abi,ij,abj->ab", grid, w[0], grid)
    torch.testing.assert_close(analysis.hopfield_energy(w[0], grid, grid), direct)


@pytest.mark.slow
def test_saturation_figures_equal_direct_computations(tmp_path):
    """A model with huge plasticity and a saturated embedding drives W to its bound and its reads into tanh's
    flat zone: the figure's numbers must equal a direct per-step count over the running episodes."""
    task = make_task("harlow")
    model = MetODS(ModelConfig(n=6, depth=1, plastic_bound=0.5), task.obs_dim, task.num_actions)
    generator = torch.Generator().manual_seed(0)
    params = model.spec.unflatten(model.init_params(generator).unsqueeze(0))
    params["alpha"] = torch.full_like(params["alpha"], 2.0)
    params["f_w"] = params["f_w"] * 10  # v0 near +-1: W v0 reaches the bound times N coherent terms
    data = analysis.collect(model, params, task, 12, seed=1, action_mode="sample")
    pre = analysis.read_preactivation(data.W, data.W0, data.v0)
    for t in (0, 1, 7):
        before = data.W0 if t == 0 else data.W[t - 1]
        torch.testing.assert_close(pre[t], torch.einsum("eij,ej->ei", before, data.v0[t]))
    report = analysis.plot_saturation(data, 0.5, "tanh", tmp_path / "saturation.png", "test")
    assert_real_png(tmp_path / "saturation.png")
    for t in (0, 5, int(data.lengths.max()) - 1):
        running = [e for e in range(12) if t < int(data.lengths[e])]
        clipped = sum(float((data.W[t, e].abs() >= 0.5).float().mean()) for e in running) / len(running)
        flat = sum(float((pre[t, e].abs() > analysis.FLAT_FROM["tanh"]).float().mean()) for e in running) / len(running)
        assert report["clipped_fraction"][t] == pytest.approx(clipped, abs=1e-6)
        assert report["flat_read_fraction"][t] == pytest.approx(flat, abs=1e-6)
    assert report["clipped_fraction"][0] < 0.1 and report["at_last_step"]["clipped_fraction"] > 0.3
    assert report["at_last_step"]["flat_read_fraction"] > 0.1
    for activation, x in analysis.FLAT_FROM.items():  # the flat zone starts where sigma' is a tenth of sigma'(0)
        x = torch.tensor([0.0, x], dtype=torch.float64, requires_grad=True)
        (slope,) = torch.autograd.grad(getattr(torch, activation)(x).sum(), x)
        assert float(slope[1] / slope[0]) == pytest.approx(analysis.FLAT, rel=1e-9)


def test_first_choice_outcome_agrees_with_the_task_metric(harlow_run):
    data = harlow_episodes(harlow_run, episodes=64)
    outcome = analysis.first_choice_outcome(data.rewards)
    assert torch.equal(outcome == 1, data.metrics["trial1_correct"] == 1)
    assert torch.equal(outcome == -1, data.metrics["trials"] == 0)
    assert (outcome == 1).any() and (outcome == 0).any(), "both modes should appear in 64 episodes"


def test_pca_recovers_a_dominant_direction():
    generator = torch.Generator().manual_seed(0)
    direction = torch.nn.functional.normalize(torch.randn(10, generator=generator), dim=0)
    x = 5 + torch.randn(500, 1, generator=generator) * 3 * direction + 0.01 * torch.randn(500, 10, generator=generator)
    mean, components, ratio = analysis.pca(x, 2)
    assert abs(float(components[0] @ direction.double())) > 0.999 and ratio[0] > 0.99
    torch.testing.assert_close(components @ components.T, torch.eye(2, dtype=torch.float64))
    torch.testing.assert_close(mean, x.double().mean(0))


@pytest.mark.slow
def test_analyze_maze_without_first_choice_colouring(tmp_path_factory, tmp_path):
    run = trained_run(tmp_path_factory, "maze")
    result = cli("analyze", run, "--out", tmp_path / "maze", "--episodes", 6)
    assert result.exit_code == 0, result.stderr
    for name in FIGURES:
        assert_real_png(tmp_path / "maze" / name)
    report = json.loads((tmp_path / "maze" / "analysis.json").read_text())
    assert "first_choice_counts" not in report["w_pca"] and len(report["reward_per_step"]["mean"]) == 100


def test_bad_input_is_one_line_and_exit_2(tmp_path):
    (tmp_path / "empty").mkdir()
    for target, message in ((tmp_path / "missing", "no run directory"), (tmp_path / "empty", "not a run directory")):
        result = cli("analyze", target)
        assert result.exit_code == 2
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0]
    assert cli("analyze", tmp_path / "empty", "--episodes", 0).exit_code == 2


def test_unsupported_models_and_tasks_are_refused():
    class Continuous:
        discrete = False

    harlow = make_task("harlow")
    model = MetODS(ModelConfig(n=4), harlow.obs_dim, harlow.num_actions)
    with pytest.raises(ConfigError, match="continuous actions"):
        analysis.check_supported(model, Continuous())
    with pytest.raises(ConfigError, match="plastic weights"):
        analysis.check_supported(object(), harlow)
