"""metods-evo command line: a thin layer that parses, validates, calls one function and prints.

Every user mistake (unknown task / optimizer / algorithm, bad numbers, unknown ``--set`` key,
missing or corrupt run, existing ``--out``, an ``--import`` module not found) ends with one ``error: ...`` line and
exit code 2. Plugins (``metods_evo.plugins``: installed entry points, ``--import MODULE``) are loaded before the
command runs.
"""

from __future__ import annotations

import sys

import click

from metods_evo import api, plugins
from metods_evo import impairment as imp
from metods_evo.analysis import analyze as run_analysis
from metods_evo.config import MAX_SEED, ConfigError, generation_seed, validate_task
from metods_evo.evaluate import USER_STREAM, evaluate_theta, format_table, open_agent, to_json
from metods_evo.experiments import ablate as run_ablate
from metods_evo.experiments import compare as run_compare
from metods_evo.gate import HEADLINES, gate
from metods_evo.optimizers import OPTIMIZERS, declaration
from metods_evo.paired import format_paired
from metods_evo.paired import paired as paired_comparison
from metods_evo.reproduce import EXPERIMENTS
from metods_evo.reproduce import reproduce as run_reproduce
from metods_evo.runs import AGENT_CHOICES, RunDir
from metods_evo.tasks import TASKS


class OneLineErrors(click.Group):
    """Turn every usage / configuration error into a single line on stderr and exit code 2."""
    def main(self, *args, **kwargs):
        kwargs["standalone_mode"] = False
        try:
            return super().main(*args, **kwargs)
        except click.exceptions.Exit as done:
            sys.exit(done.exit_code)
        except (click.Abort, KeyboardInterrupt):
            click.echo("interrupted: the last checkpoint is kept; continue with `metods-evo train --resume RUN`",
                       err=True)
            sys.exit(130)
        except click.ClickException as err:
            click.echo(f"error: {err.format_message()}", err=True)
            sys.exit(2)
        except ConfigError as err:  # unknown task / optimizer: also how to load a plugin's
            click.echo(f"error: {plugins.with_import_hint(str(err))}", err=True)
            sys.exit(2)


# evaluate, analyze, impairment: which of the run's thetas to play
agent_option = click.option("--agent", type=click.Choice(AGENT_CHOICES), default="best", show_default=True,
                            help="The run's best theta (agent.pt, best periodic evaluation) or its last "
                                 "(latest checkpoint).")


SEED = click.IntRange(0, MAX_SEED)  # what torch's generators take (config.MAX_SEED)


def parse_sets(pairs: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set expects key=value, got {pair!r}")
        out[key.strip()] = value.strip()
    return out


def this_command() -> str:
    """The command line as typed, for an experiment's COMMAND.md."""
    import os
    import shlex

    return shlex.join([os.path.basename(sys.argv[0]) or "metods-evo", *sys.argv[1:]])


def keep_on_interrupt(out: str, experiment):
    """Run a resumable experiment; Ctrl-C keeps what is done and says how to continue (exit code 130)."""
    try:
        return experiment()
    except KeyboardInterrupt:
        click.echo(f"interrupted: finished runs and checkpoints are kept; re-run with --out {out} to continue",
                   err=True)
        sys.exit(130)


@click.group(cls=OneLineErrors, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="metods-evo")
@click.option("--import", "imports", multiple=True, metavar="MODULE",
              help="Import MODULE (on the Python path or in the working directory) before the command: its "
                   "register(...) calls add tasks and optimizers of your own. Repeatable. Installed packages' entry "
                   "points in the group metods_evo.plugins are loaded always.")
def main(imports: tuple[str, ...]) -> None:
    """Meta-RL with self-modifying (MetODS) networks, meta-trained by evolution strategies and policy gradient."""
    for problem in plugins.load_entry_points():
        click.echo(f"warning: {problem}", err=True)
    for name in imports:
        plugins.import_plugin(name)


@main.command()
def tasks() -> None:
    """List the registered tasks with their observation and action sizes."""
    width = max(len(task_id) for task_id in TASKS) + 1
    click.echo(f"{'task':<{width}} {'obs':>4} {'actions':>9} {'max steps':>9}  description")
    for task_id, spec in sorted(TASKS.items()):
        try:
            obs_dim, num_actions, action_dim, max_steps = spec.describe()
        except ImportError as error:  # an optional simulator that is not installed
            missing = f"[{error.name} not installed]"
            click.echo(f"{task_id:<{width}} {'-':>4} {'-':>9} {'-':>9}  {spec.description} {missing}")
            continue
        actions = num_actions or f"{action_dim} (cont.)"
        click.echo(f"{task_id:<{width}} {obs_dim:>4} {actions!s:>9} {max_steps:>9}  {spec.description}")


@main.command()
@click.option("--task", default=None, help="Registered task id (see `metods-evo tasks`). [default: harlow]")
@click.option("--optimizer", default=None, help=f"Meta-optimizer: {' | '.join(OPTIMIZERS)}. [default: es]")
@click.option("--algorithm", default=None,
              help="ES algorithm (evotorch): pgpe | snes | cem | cmaes (separable: diagonal covariance) | cmaes-full | "
                   "xnes (full covariance: O(D^2) memory). [default: pgpe; the harlow preset uses snes]")
@click.option("--popsize", type=int, default=None, help="Population size.")
@click.option("--generations", type=int, default=None, help="Number of generations.")
@click.option("--budget-steps", type=int, default=None, help="Stop after this many environment steps instead.")
@click.option("--seed", type=SEED, default=None, help="Seed of the whole run. [default: 0]")
@click.option("--device", default=None, help="cpu | cuda | cuda:N. [default: cpu]")
@click.option("--num-actors", type=int, default=None, help="Ray actors for population evaluation. [default: 0]")
@click.option("--out", default=None, help="New run directory. [default: runs/<task>__<opt>__s<seed>__<time>]")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Override any config field: model.n=32, es.sigma_init=0.05, task.size=10, eval_every=5 ...")
@click.option("--resume", default=None, metavar="RUN",
              help="Continue a killed run from its checkpoint (with --generations/--budget-steps: extend it).")
@click.option("--progress/--no-progress", default=True, help="Live progress bar.")
def train(task, optimizer, algorithm, popsize, generations, budget_steps, seed, device, num_actors, out, sets, resume,
          progress) -> None:
    """Meta-train a MetODS agent; prints the run directory and the final evaluation."""
    if resume is not None:
        given = [task, optimizer, algorithm, popsize, seed, device, num_actors, out]
        if any(v is not None for v in given) or sets:
            raise ConfigError("--resume continues a run with its saved config; only --generations / "
                              "--budget-steps may be given, to extend it")
        cfg, run = api.resume_run(resume, generations, budget_steps)
    else:
        es_flags = {"--algorithm": algorithm, "--popsize": popsize, "--num-actors": num_actors}
        unused = [flag for flag, value in es_flags.items() if value is not None]
        sections = declaration(optimizer or "es").sections  # None: not declared, any
        if unused and sections is not None and "es" not in sections:
            raise ConfigError(f"{', '.join(unused)}: ES settings, which --optimizer {optimizer} does not use")
        flags = {"es.algorithm": algorithm, "es.popsize": popsize, "generations": generations,
                 "budget_steps": budget_steps, "seed": seed, "device": device, "es.num_actors": num_actors}
        overrides = {k: str(v) for k, v in flags.items() if v is not None} | parse_sets(sets)
        cfg, run = api.new_run(task or "harlow", optimizer or "es", overrides, out)
    click.echo(f"run directory: {run.path}", err=True)
    report = api.run_training(cfg, run, resume=resume is not None, progress=progress)
    click.echo(format_table(report))
    click.echo(f"best theta from generation {report['generation']}, {report['env_steps']:,} env steps, "
               f"{report['wall_s']:.0f} s; files in {run.path}")


@main.command()
@click.argument("run_dir", metavar="RUN")
@click.option("--task", default=None, help="Evaluate on another registered task (same observation/action sizes).")
@click.option("--set", "sets", multiple=True, metavar="task.KEY=VALUE", help="Task options, e.g. task.size=10.")
@click.option("--episodes", type=click.IntRange(min=1), default=1000, show_default=True)
@click.option("--seed", type=SEED, default=None, help="Evaluation seed. [default: derived from the run's seed]")
@click.option("--action-mode", type=click.Choice(["greedy", "sample"]), default=None,
              help="How the agent picks actions. [default: as the run was evaluated: greedy for ES, sampled for "
                   "gradient-trained runs]")
@agent_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option("--plot", default=None, metavar="PNG",
              help="Also write a figure of the reward per time step (and Meta-World success per rollout) to PNG "
                   "(.png, .pdf, .svg ...).")
def evaluate(run_dir, task, sets, episodes, seed, action_mode, agent, as_json, plot) -> None:
    """Score a run's best (or last) agent on fresh episodes: each task metric as mean ± std."""
    if plot is not None:
        check_figure_path(plot)
    options = {}
    for key, value in parse_sets(sets).items():
        if not key.startswith("task."):
            raise ConfigError(f"evaluate only takes task options (--set task.KEY=VALUE), got {key!r}")
        options[key[5:]] = value
    run, cfg, theta, options = open_agent(run_dir, task=task, task_options=options, agent=agent)
    if action_mode is not None:
        cfg.eval_action_mode = action_mode
    seed = seed if seed is not None else generation_seed(cfg.seed, 0, USER_STREAM)
    report = evaluate_theta(cfg, theta, episodes, seed, task_options=options)
    click.echo(to_json(report) if as_json else format_table(report))
    if plot is not None:
        from metods_evo.plots import plot_evaluation

        title = f"{cfg.task} {options or ''} — {agent} theta, {episodes} episodes, {cfg.action_mode()} actions"
        plot_evaluation(report, plot, title=title)
        click.echo(f"figure: {plot}", err=True)


def check_figure_path(path: str) -> None:
    """A figure's path must name a format matplotlib writes, in a writable directory: checked before the work."""
    import os
    from pathlib import Path

    from matplotlib.backend_bases import FigureCanvasBase

    target = Path(path)
    formats = FigureCanvasBase.get_supported_filetypes()
    if target.suffix.lstrip(".").lower() not in formats:
        raise ConfigError(f"--plot {path}: name a figure file ending in .{', .'.join(sorted(formats))}")
    folder = target.parent
    if not folder.is_dir():
        raise ConfigError(f"--plot {path}: no directory {folder}")
    if target.is_dir() or not os.access(folder, os.W_OK):
        raise ConfigError(f"--plot {path}: cannot write there")


@main.command(short_help="A − B on the same episodes: two runs, or two arms of runs, seed by seed.")
@click.argument("run_a", metavar="A")
@click.argument("run_b", metavar="B")
@click.option("--set", "sets", multiple=True, metavar="task.KEY=VALUE", help="Task options, e.g. task.size=10.")
@click.option("--episodes", type=click.IntRange(min=1), default=1000, show_default=True, help="Episodes per seed.")
@click.option("--seed", type=SEED, default=None,
              help="Episode seed. [default: each run's final-evaluation seed, the episodes of its eval*.json]")
@click.option("--agent-a", type=click.Choice(AGENT_CHOICES), default="best", show_default=True,
              help="A's best theta (agent.pt) or its last (latest checkpoint).")
@click.option("--agent-b", type=click.Choice(AGENT_CHOICES), default="best", show_default=True,
              help="B's, likewise: A and B may be one run, to pair its last theta against its best.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def paired(run_a, run_b, sets, episodes, seed, agent_a, agent_b, as_json) -> None:
    """A − B on the same episodes: two runs, or two arms of runs (seed0, seed1, ... inside) paired seed by seed."""
    options = {}
    for key, value in parse_sets(sets).items():
        if not key.startswith("task."):
            raise ConfigError(f"paired only takes task options (--set task.KEY=VALUE), got {key!r}")
        options[key[5:]] = value
    report = paired_comparison(run_a, run_b, episodes=episodes, task_options=options, seed=seed,
                               agents=(agent_a, agent_b))
    click.echo(to_json(report) if as_json else format_paired(report))


@main.command()
@click.argument("run_dir", metavar="RUN")
@click.option("--out", default=None, help="Folder for the figures and analysis.json. [default: RUN/analysis]")
@click.option("--episodes", type=click.IntRange(min=1), default=256, show_default=True,
              help="Fresh episodes played by the run's agent.")
@click.option("--seed", type=SEED, default=None, help="Episode seed. [default: derived from the run's seed]")
@agent_option
def analyze(run_dir, out, episodes, seed, agent) -> None:
    """Figures of a run's plastic weights: W-PCA, Hopfield energy, |dW| against reward, reward per step."""
    import torch


    torch.set_num_threads(RunDir.open(run_dir).config().threads)
    for path in run_analysis(run_dir, out, episodes=episodes, seed=seed, agent=agent):
        click.echo(str(path))


@main.command()
@click.argument("run_dir", metavar="RUN")
@click.option("--actuators", default="all", show_default=True,
              help="Actuators to freeze one at a time: 'all' or comma-separated indices.")
@click.option("--episodes", type=click.IntRange(min=1), default=100, show_default=True,
              help="Episodes per setting (the same seeded episodes for every setting).")
@click.option("--seed", type=SEED, default=None, help="Episode seed. [default: derived from the run's seed]")
@click.option("--out", default=None, help="Folder for impairment.json / .md / .png. [default: RUN]")
@agent_option
def impairment(run_dir, actuators, episodes, seed, out, agent) -> None:
    """Robustness to damage: the run's agent with each actuator frozen, as a fraction of its intact return."""
    from pathlib import Path


    run, cfg, theta, _ = open_agent(run_dir, agent=agent)
    if imp.TASK_OPTION not in TASKS[cfg.task].options():
        raise ConfigError(f"task {cfg.task!r} has no {imp.TASK_OPTION} option: impairment needs a MuJoCo "
                          "direction task (cheetah-dir, ant-dir)")
    count = validate_task(cfg.task, cfg.task_options).action_dim
    if actuators.strip() == "all":
        chosen = list(range(count))
    else:
        try:
            chosen = [int(a) for a in actuators.split(",") if a.strip()]
        except ValueError:
            raise ConfigError(f"--actuators must be 'all' or comma-separated integers, got {actuators!r}") from None
        bad = [a for a in chosen if not 0 <= a < count]
        if bad or not chosen:
            raise ConfigError(f"--actuators: {cfg.task} has actuators 0..{count - 1}, got {actuators!r}")
    seed = seed if seed is not None else generation_seed(cfg.seed, 0, USER_STREAM)
    result = imp.impairment_report(cfg, theta, chosen, episodes, seed)
    click.echo(imp.format_markdown(result))
    for path in imp.write(result, Path(out) if out else run.path):
        click.echo(str(path), err=True)


@main.command()
@click.option("--task", default="harlow", show_default=True, help="Registered task id (see `metods-evo tasks`).")
@click.option("--optimizers", default="es,ppo", show_default=True, help="Comma-separated meta-optimizers to compare.")
@click.option("--seeds", type=click.IntRange(min=1), default=3, show_default=True, help="Seeds 0..N-1 per optimizer.")
@click.option("--budget-steps", type=click.IntRange(min=1), required=True, help="Env-step budget of every run.")
@click.option("--out", default=None,
              help="Compare directory; an existing one is resumed. [default: runs/compare-<task>-<time>]")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Config override applied to every run.")
@click.option("--threshold", type=float, default=None,
              help="Return counted as solved, for the time-to-threshold columns. [default: per task, e.g. harlow 3.8]")
@click.option("--jobs", type=click.IntRange(min=1), default=1, show_default=True,
              help="Runs trained at once, one single-threaded process each (wall times then share the cores).")
@click.option("--progress/--no-progress", default=True, help="Live progress bar.")
def compare(task, optimizers, seeds, budget_steps, out, sets, threshold, jobs, progress) -> None:
    """Train each optimizer over several seeds at one env-step budget; table (compare.md) and plot (compare.png).

    A killed compare continues where it stopped when re-run with the same options and --out.
    """
    import time

    names = [name.strip() for name in optimizers.split(",") if name.strip()]
    for name in names:
        OPTIMIZERS.lookup(name)
    out = out or f"runs/compare-{task}-{time.strftime('%Y%m%d-%H%M%S')}"
    summary = keep_on_interrupt(out, lambda: run_compare(
        task, names, seeds, budget_steps, out, overrides=parse_sets(sets), threshold=threshold, progress=progress,
        jobs=jobs, command=this_command()))
    click.echo(summary["table"])
    click.echo(f"files in {out}: compare.md, compare.csv, compare.png")


@main.command()
@click.option("--task", default="maze", show_default=True, help="Registered task id (see `metods-evo tasks`).")
@click.option("--variants", default=None,
              help="Comma-separated model variants. [default: every variant that differs from the task's defaults: "
                   "depth-1|2|3, scalar-alpha, write-hebbian|linear|mlp, w0-zero|learnt|random, plus 'metods' itself]")
@click.option("--optimizer", default="ppo", show_default=True, help="Meta-optimizer of every run.")
@click.option("--seeds", type=click.IntRange(min=1), default=3, show_default=True, help="Seeds 0..N-1 per variant.")
@click.option("--budget-steps", type=click.IntRange(min=1), default=10_000_000, show_default=True,
              help="Env-step budget of every run.")
@click.option("--out", default=None,
              help="Ablation directory; an existing one is resumed. [default: runs/ablate-<task>-<time>]")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Config override applied to every run.")
@click.option("--threshold", type=float, default=None, help="Score counted as solved. [default: per task]")
@click.option("--jobs", type=click.IntRange(min=1), default=1, show_default=True,
              help="Runs trained at once, one single-threaded process each.")
@click.option("--progress/--no-progress", default=True, help="Live progress bar.")
def ablate(task, variants, optimizer, seeds, budget_steps, out, sets, threshold, jobs, progress) -> None:
    """Train each MetODS variant over seeds at one budget; table (ablate.md / .csv) and plot (ablate.png)."""
    import time


    names = None if variants is None else [v.strip() for v in variants.split(",") if v.strip()]
    out = out or f"runs/ablate-{task}-{time.strftime('%Y%m%d-%H%M%S')}"
    summary = keep_on_interrupt(out, lambda: run_ablate(
        task, names, seeds, budget_steps, out, optimizer=optimizer, overrides=parse_sets(sets), threshold=threshold,
        progress=progress, jobs=jobs, command=this_command()))
    click.echo(summary["table"])
    click.echo(f"files in {out}: ablate.md, ablate.csv, ablate.png")


@main.command()
@click.argument("experiment", metavar="EXPERIMENT")
@click.option("--seeds", type=click.IntRange(min=1), default=None,
              help="Seeds 0..N-1 per agent. [default: 1 for a paper table, the headline's own for a headline]")
@click.option("--episodes", type=click.IntRange(min=1), default=1000, show_default=True,
              help="Fresh evaluation episodes per setting and seed (paper tables; impairment: per actuator frozen).")
@click.option("--quick", is_flag=True, help="A smoke run: tiny budgets and models (for tests; numbers mean nothing).")
@click.option("--out", default=None, help="Output directory; an existing one is resumed. [default: runs/<EXPERIMENT>]")
@click.option("--jobs", type=click.IntRange(min=1), default=1, show_default=True,
              help="Runs trained at once, one single-threaded process each.")
@click.option("--progress/--no-progress", default=True, help="Live progress bar.")
def reproduce(experiment, seeds, episodes, quick, out, jobs, progress) -> None:
    """Re-make a result from scratch with today's code.

    EXPERIMENT is one of the paper's tables (maze-table | harlow: MetODS and the baselines beside the paper's
    numbers, table.md), its robot-impairment comparison (impairment-cheetah | impairment-ant: MetODS, RL², MAML
    and PEARL trained on the intact robot, then scored with each actuator frozen, impairment.md; hours per seed)
    or one or more of the README's headline results, comma-separated, or `headlines` for all of them (the
    reproduction gate: each trained on every seed, a pass/fail table in gate.md; exit code 1 when a seed misses
    its threshold).
    """
    names = list(HEADLINES) if experiment == "headlines" else [n.strip() for n in experiment.split(",") if n.strip()]
    if experiment in EXPERIMENTS:
        out = out or f"runs/{experiment}" + ("-quick" if quick else "")
        result = keep_on_interrupt(out, lambda: run_reproduce(
            experiment, out, seeds=seeds or 1, quick=quick, episodes=episodes, jobs=jobs, progress=progress,
            command=this_command()))
        click.echo(result["table"])
        click.echo(f"files in {out}: {', '.join(result['files'])}")
        return
    unknown = [n for n in names if n not in HEADLINES]
    if unknown or not names:
        raise ConfigError(f"unknown experiment {experiment!r}; choose a paper table ({', '.join(EXPERIMENTS)}), "
                          f"headlines ({', '.join(HEADLINES)}) or `headlines` for all of them")
    out = out or "runs/gate" + ("-quick" if quick else "")
    result = keep_on_interrupt(out, lambda: gate(names, out, seeds=seeds, quick=quick, jobs=jobs, progress=progress,
                                                 command=this_command()))
    click.echo(result["table"])
    click.echo(f"files in {out}: gate.md and a run directory per headline and seed")
    if not result["passed"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
