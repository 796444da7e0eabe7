"""Evolution strategies through evotorch: a ``Problem`` that scores the whole population in one
batched rollout, and a trainer that steps an evotorch searcher one generation at a time.

The trainer computes and returns a flat metrics dict per generation; it never touches files.
Its ``state_dict`` holds the pickled searcher (distribution, optimizer moments, the problem's
RNG), the generation and the step counter, so a resumed run continues exactly where it stopped.
"""

from __future__ import annotations

import io
import logging
import pickle
import time
from collections.abc import Callable
from typing import Any

import torch
from evotorch import Problem, SolutionBatch
from evotorch.tools import ranking

from metods_evo.config import RunConfig, generation_seed
from metods_evo.evaluate import EVAL_STREAM, evaluate_theta
from metods_evo.models import build_model
from metods_evo.optimizers.base import OptimizerDeclaration
from metods_evo.rollout import rollout
from metods_evo.tasks import make_task

logging.getLogger("evotorch").setLevel(logging.WARNING)  # its INFO lines would drown the progress bar


def tie_averaged(ranker: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    """An evotorch ranker whose equal fitnesses get equal utility: the mean of the utilities of the ranks they share.

    A fitness averaged over E episodes of a game with integer returns moves in steps of 1/E, so most of a
    population shares its fitness with another individual (on Harlow, ~85 %). evotorch's rankers order ties by
    index, i.e. by the sample's place in the batch: those utilities are noise, and they move the center as much
    as real differences do. Averaging them gives a tie no direction of its own.
    """

    def rank(fitnesses: torch.Tensor, *, higher_is_better: bool = True) -> torch.Tensor:
        x = fitnesses.reshape(-1)
        order = torch.argsort(x, descending=higher_is_better, stable=True)
        positions = torch.arange(len(x), 0, -1, dtype=x.dtype, device=x.device)  # best first, all distinct
        by_position = ranker(positions, higher_is_better=True)  # the utility of the k-th best
        _, group, counts = torch.unique_consecutive(x[order], return_inverse=True, return_counts=True)
        shared = torch.zeros(len(counts), dtype=x.dtype, device=x.device).index_add_(0, group, by_position)
        utilities = torch.empty_like(x)
        utilities[order] = (shared / counts.to(x.dtype))[group]
        return utilities.reshape(fitnesses.shape)

    return rank


TIE_AVERAGED = {name: f"{name}-tie-averaged" for name in ("nes", "centered")}
for _name, _averaged in TIE_AVERAGED.items():  # evotorch looks rankers up by name in this dict
    ranking.rankers[_averaged] = tie_averaged(ranking.rankers[_name])
RANDOM_TIES_STREAM = 4  # the seed stream of the tie-breaking jitter (es.ties = random)
START_STREAM = 5  # the seed stream of the initial theta and the samples of es.starts' searchers 1, 2, ...


def score(result, metric: str) -> torch.Tensor:
    """Fitness ``[P]``: the task's main metric averaged over episodes; non-finite runs score the worst."""
    fitness = result.metrics[metric].mean(1)
    bad = ~(result.finite.all(1) & torch.isfinite(fitness))
    if bad.any():
        worst = fitness[~bad].min() if (~bad).any() else fitness.new_tensor(-1e9)
        fitness = torch.where(bad, worst - 1.0, fitness)
    return fitness


class MetODSProblem(Problem):
    """Fitness of a population of MetODS parameter vectors on a task, all individuals in one rollout."""

    def __init__(self, cfg: RunConfig, subset: torch.Tensor | None = None, seed: int | None = None):
        """``subset`` (indices into theta) searches only those entries; the rest come from ``self.base``. ``seed``
        seeds the population samples (default: the run's seed) and, with ``es.start_episodes=own``, the episodes."""
        self.run_cfg = cfg
        self.task = make_task(cfg.task, device=cfg.device, **cfg.task_options)
        self.model = build_model(cfg, self.task)
        self.round = 0  # the generation being scored: its episodes (synced to Ray actors); evaluate() advances it
        self.pending_env_steps = 0
        own = cfg.es.start_episodes == "own" and seed is not None
        self.episode_seed = seed if own else cfg.seed  # the stream of each generation's episodes
        self.subset = subset
        self.base: torch.Tensor | None = None  # the full theta that a subset search plugs its solutions into
        actors = cfg.es.num_actors or None
        length = self.model.num_params if subset is None else len(subset)
        super().__init__("max", solution_length=length, initial_bounds=(-0.1, 0.1),
                         dtype=torch.float32, device=cfg.device, seed=cfg.seed if seed is None else seed,
                         num_actors=actors,
                         actor_config={"num_cpus": cfg.es.threads_per_actor} if actors else None)

    def evaluate(self, x) -> None:
        """Score a population, then move on to the next generation's episodes: each evaluation is one generation,
        so a searcher stepped by hand (not through ``ESTrainer``) never re-scores the same episodes."""
        super().evaluate(x)
        if self.is_main:
            self.round += 1

    def seed(self, value: int) -> None:
        """evotorch 0.6's Ray actors call ``problem.seed(...)``, which ``Problem`` names ``manual_seed``."""
        self.manual_seed(value)

    def _parallelize(self) -> None:
        # evotorch draws the actors' seeds from the problem's generator, which would make the population
        # samples (and so the whole run) depend on whether and when actors were started. Restoring the
        # generator keeps a run with Ray actors identical to the same run in one process.
        state = self._generator.get_state() if self._generator is not None else None
        super()._parallelize()
        if state is not None:
            self._generator.set_state(state)

    # Ray actors get the generation index before each evaluation and report their step counts after it.
    def _make_sync_data_for_actors(self) -> Any:
        return self.round, self.base

    def _use_sync_data_from_main(self, received: Any) -> None:
        self.round, self.base = received

    def _make_sync_data_for_main(self) -> Any:
        steps, self.pending_env_steps = self.pending_env_steps, 0
        return steps

    def _use_sync_data_from_actors(self, received: list) -> None:
        self.pending_env_steps += sum(received)

    def _evaluate_batch(self, batch: SolutionBatch) -> None:
        if self.is_remote and torch.get_num_threads() != self.run_cfg.es.threads_per_actor:
            torch.set_num_threads(self.run_cfg.es.threads_per_actor)  # no oversubscription: actors x threads
        cfg = self.run_cfg
        generator = torch.Generator(device=self.task.device).manual_seed(generation_seed(self.episode_seed, self.round))
        values = batch.values.to(self.task.device).as_subclass(torch.Tensor)  # drop evotorch's read-only type
        if self.subset is not None:
            full = self.base.to(values).expand(len(values), -1).clone()
            full[:, self.subset.to(values.device)] = values
            values = full
        params = self.model.spec.unflatten(values)
        late = cfg.es.late_episodes > 0 and self.round >= cfg.es.late_from
        episodes = cfg.es.late_episodes if late else cfg.es.episodes
        with torch.no_grad():
            result = rollout(self.model, params, self.task, episodes, generator, action_mode=cfg.es.action_mode,
                             antithetic=antithetic_episodes(cfg, self.task, self.round))
        self.pending_env_steps += result.env_steps
        fitness = score(result, self.task.main_metric)
        if cfg.es.ties == "random":  # a diagnostic: order equal fitnesses at random instead of by index
            jitter = torch.Generator(device=fitness.device).manual_seed(
                generation_seed(cfg.seed, self.round, RANDOM_TIES_STREAM))
            fitness = fitness + 1e-6 * torch.rand(fitness.shape, generator=jitter, device=fitness.device)
        batch.set_evals(fitness.to(batch.values.device))


def antithetic_episodes(cfg: RunConfig, task, generation: int) -> bool:
    """``es.antithetic``: whether generation ``generation`` is scored on antithetic pairs of episodes."""
    mode = cfg.es.antithetic
    if mode == "late":
        return task.can_mirror() and generation >= cfg.es.late_from
    return mode == "on" or (mode == "auto" and task.can_mirror())


PGPE_CENTER_LR, PGPE_STDEV_LR = 0.2, 0.1  # ClipUp step size (max speed twice that) and sigma learning rate


def ranking_method(base: str, ties: str) -> str:
    """The evotorch ranker of a searcher whose own is ``base``, by ``es.ties`` (only 'average' changes it)."""
    return TIE_AVERAGED[base] if ties == "average" else base


def make_searcher(cfg: RunConfig, problem: MetODSProblem, center: torch.Tensor):
    from evotorch.algorithms import CEM, CMAES, PGPE, SNES, XNES

    es = cfg.es
    if es.algorithm == "pgpe":
        center_lr = es.center_lr or PGPE_CENTER_LR
        return PGPE(problem, popsize=es.popsize, center_init=center, stdev_init=es.sigma_init,
                    center_learning_rate=center_lr, stdev_learning_rate=es.stdev_lr or PGPE_STDEV_LR,
                    stdev_max_change=es.stdev_max_change, optimizer="clipup",
                    optimizer_config={"max_speed": es.max_speed or 2 * center_lr},
                    ranking_method=ranking_method("centered", es.ties))
    if es.algorithm == "snes":
        kwargs = {k: v for k, v in (("center_learning_rate", es.center_lr), ("stdev_learning_rate", es.stdev_lr)) if v}
        return SNES(problem, popsize=es.popsize, center_init=center, stdev_init=es.sigma_init,
                    ranking_method=ranking_method("nes", es.ties), **kwargs)
    if es.algorithm == "cem":
        return CEM(problem, popsize=es.popsize, center_init=center, stdev_init=es.sigma_init,
                   parenthood_ratio=es.parenthood_ratio)
    if es.algorithm in ("cmaes", "cmaes-full"):  # cmaes: diagonal covariance, O(D); cmaes-full: O(D^2) memory
        return CMAES(problem, popsize=es.popsize, center_init=center, stdev_init=es.sigma_init,
                     separable=es.algorithm == "cmaes")
    if es.algorithm == "xnes":  # full covariance: O(D^2) memory and a D x D matrix exponential per generation
        kwargs = {k: v for k, v in (("center_learning_rate", es.center_lr), ("stdev_learning_rate", es.stdev_lr)) if v}
        return XNES(problem, popsize=es.popsize, center_init=center, stdev_init=es.sigma_init,
                    ranking_method=ranking_method("nes", es.ties), **kwargs)
    raise ValueError(f"unknown ES algorithm {es.algorithm!r}")


def start_seed(cfg: RunConfig, start: int) -> int:
    """The seed of searcher ``start`` of ``es.starts`` (its initial theta and its samples); the first is the run's."""
    return cfg.seed if start == 0 else generation_seed(cfg.seed, start, START_STREAM)


class ESDeclaration(OptimizerDeclaration):
    """The ``es`` optimizer's declaration, shared by its one-searcher and multi-start trainers."""

    sections = ("es",)

    @classmethod
    def action_mode(cls, cfg: RunConfig) -> str:
        return cfg.es.action_mode

    @classmethod
    def run_tag(cls, cfg: RunConfig) -> str:
        return f"es-{cfg.es.algorithm}"

    @classmethod
    def detail(cls, cfg: RunConfig) -> str:
        return cfg.es.algorithm

    @classmethod
    def center_of(cls, state: dict[str, Any]) -> torch.Tensor:
        if "starts" in state:  # es.starts > 1: the leading searcher (MultiStartES.leader)
            scores, starts = state["scores"], state["starts"]
            leader = min(scores, key=lambda k: (-scores[k], k)) if scores else min(starts)
            return cls.center_of(starts[leader])
        searcher = pickle.loads(state["searcher"])  # the evotorch searcher, pickled whole
        return searcher.status["center"].detach().clone().cpu()


class ESTrainer(ESDeclaration):
    """One evotorch searcher, stepped a generation at a time: ``step() -> metrics``."""

    def __init__(self, cfg: RunConfig, subset: torch.Tensor | None = None, theta: torch.Tensor | None = None,
                 start: int = 0):
        """``subset``: search only these entries of theta (``problem.base`` supplies the others). ``start`` > 0: an
        independent searcher of a multi-start run (``MultiStartES``), from its own initial theta and samples."""
        self.cfg = cfg
        seed = start_seed(cfg, start)
        self.problem = MetODSProblem(cfg, subset, seed=seed)
        self.model, self.task = self.problem.model, self.problem.task
        if theta is None:
            theta = self.model.init_params(torch.Generator().manual_seed(seed))
        self.problem.base = theta.detach().clone().cpu()
        center = (theta if subset is None else theta[subset]).to(cfg.device)
        self.searcher = make_searcher(cfg, self.problem, center)
        self.generation = 0
        self.env_steps = 0

    def step(self) -> dict[str, float]:
        start = time.perf_counter()
        es = self.cfg.es
        if es.late_sigma > 0 and self.generation == es.late_from:
            # evotorch clamps sigma to this bound after each update, starting with this step's update of the last
            # generation (whose samples were drawn with the old sigma, as that update assumes)
            self.searcher._stdev_max = self.problem.ensure_tensor_length_and_dtype(
                es.late_sigma, about="es.late_sigma", allow_scalar=True)
        self.searcher.step()
        self.generation += 1
        steps, self.problem.pending_env_steps = self.problem.pending_env_steps, 0
        self.env_steps += steps
        fitness = self.searcher.population.evals[:, 0]
        elapsed = time.perf_counter() - start
        return {"es/fitness_mean": float(fitness.mean()), "es/fitness_best": float(fitness.max()),
                "es/fitness_std": float(fitness.std()), "es/sigma_mean": float(self.stdev().mean()),
                "train/episode_return": float(fitness.mean()), "perf/generation_s": elapsed,
                "perf/steps_per_s": steps / max(elapsed, 1e-9)}

    def center(self) -> torch.Tensor:
        """The search distribution's center: the theta this run stands for (a subset search: its entries)."""
        return self.searcher.status["center"].detach().clone().cpu()

    def set_base(self, theta: torch.Tensor) -> None:
        """The full theta that a search of a subset of its entries plugs its samples into."""
        self.problem.base = theta.detach().clone().cpu()

    def stdev(self) -> torch.Tensor:
        status = self.searcher.status
        if "stdev" in status:
            return status["stdev"]
        return torch.as_tensor(float(status.get("sigma", 0.0)))

    def state_dict(self) -> dict[str, Any]:
        buffer = io.BytesIO()
        pickle.dump(self.searcher, buffer)
        return {"searcher": buffer.getvalue(), "generation": self.generation, "env_steps": self.env_steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.close()
        self.searcher = pickle.loads(state["searcher"])
        self.problem = self.searcher.problem
        self.model, self.task = self.problem.model, self.problem.task
        self.generation, self.env_steps = state["generation"], state["env_steps"]
        self.problem.round = self.generation  # the next generation to score

    def close(self) -> None:
        if getattr(self.problem, "_actors", None):
            self.problem.kill_actors()


class MultiStartES(ESDeclaration):
    """``es.starts`` independent searchers (``ESTrainer``), each from its own initial theta, stepped in lockstep on the
    same episodes; at generation ``es.select_at`` the one whose center scores best on the run's fixed evaluation
    episodes is kept and the others are dropped.

    A searcher's fate is set by where it starts: from some initial thetas it reaches a plateau it never leaves (on
    Harlow, "stop choosing after a loss"), from others the solution (docs/optimizers.md). Starting several and
    keeping the best makes a run fail only when every start fails, at the cost of the extra searchers until the
    selection. The selection must come late enough for the solvers to be clear of the plateau: the plateau is
    reached fast, the solution more slowly.
    """

    def __init__(self, cfg: RunConfig):
        self.cfg = cfg
        self.searchers = {k: ESTrainer(cfg, start=k) for k in range(cfg.es.starts)}
        self.model, self.task = self.searchers[0].model, self.searchers[0].task
        self.scores: dict[int, float] = {}  # the last selection's score of each searcher still running
        self.last_scores: dict[int, float] = {}
        self.generation = 0
        self.env_steps = 0

    def step(self) -> dict[str, float]:
        start = time.perf_counter()
        before = {k: searcher.env_steps for k, searcher in self.searchers.items()}
        results = {k: searcher.step() for k, searcher in self.searchers.items()}
        self.generation += 1
        steps = sum(searcher.env_steps - before[k] for k, searcher in self.searchers.items())
        self.env_steps += steps
        if self.generation == self.cfg.es.select_at and len(self.searchers) > 1:
            self._select()
        metrics = dict(results[self.leader()] if self.leader() in results else next(iter(results.values())))
        elapsed = time.perf_counter() - start
        metrics |= {"es/starts_running": float(len(self.searchers)), "perf/generation_s": elapsed,
                    "perf/steps_per_s": steps / max(elapsed, 1e-9)}
        return metrics

    def _select(self) -> None:
        seed = generation_seed(self.cfg.seed, 0, EVAL_STREAM)
        metric = self.task.main_metric
        self.scores = {k: evaluate_theta(self.cfg, s.center(), self.cfg.eval_episodes, seed)["metrics"][metric]["mean"]
                       for k, s in self.searchers.items()}
        self.last_scores = dict(self.scores)  # every start's, the dropped ones' included (for inspection)
        best = min(self.scores, key=lambda k: (-self.scores[k], k))
        for k in [k for k in self.searchers if k != best]:
            self.searchers.pop(k).close()
            del self.scores[k]

    def leader(self) -> int:
        """The searcher this run stands for: the selected one (before the selection: the first)."""
        return min(self.scores, key=lambda k: (-self.scores[k], k)) if self.scores else min(self.searchers)

    def center(self) -> torch.Tensor:
        return self.searchers[self.leader()].center()

    def stdev(self) -> torch.Tensor:
        return self.searchers[self.leader()].stdev()

    def state_dict(self) -> dict[str, Any]:
        return {"starts": {k: s.state_dict() for k, s in self.searchers.items()}, "scores": dict(self.scores),
                "generation": self.generation, "env_steps": self.env_steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for k in list(self.searchers):
            if k not in state["starts"]:
                self.searchers.pop(k).close()
        for k, searcher_state in state["starts"].items():
            self.searchers[k].load_state_dict(searcher_state)
        self.scores = dict(state["scores"])
        self.generation, self.env_steps = state["generation"], state["env_steps"]

    def close(self) -> None:
        for searcher in self.searchers.values():
            searcher.close()


def make_es_trainer(cfg: RunConfig) -> ESTrainer | MultiStartES:
    """The ``es`` optimizer: one searcher, or ``es.starts`` of them."""
    return ESTrainer(cfg) if cfg.es.starts == 1 else MultiStartES(cfg)


class ES(ESDeclaration):
    """The registered ``es`` optimizer: ``ES(cfg)`` builds its trainer (``make_es_trainer``)."""

    def __new__(cls, cfg: RunConfig) -> ESTrainer | MultiStartES:  # type: ignore[misc]
        return make_es_trainer(cfg)
