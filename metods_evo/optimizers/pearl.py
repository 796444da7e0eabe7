"""PEARL (Rakelly et al., ICML 2019): off-policy meta-RL with a probabilistic latent task variable z.

The agent is the model ``model.kind=pearl`` (``models/pearl.py``: context encoder and z-conditioned tanh-Gaussian
policy), its weights the run's theta; the trainer adds what only training needs: twin critics Q(s, a, z) with target
copies, the entropy temperature alpha and a replay buffer.

Collection. Each iteration plays ``pearl.trials`` trials as one batch of task episodes (the first iteration
``pearl.initial_trials``). A trial is ``pearl.trial_episodes`` episodes of one hidden task: every episode of a trial
resets the task from the same seed, so it has the same hidden parameter (and start state), whatever the task. The first
episode plays z ~ N(0, I); each later one a sample of the posterior q(z | c) on all the trial's earlier transitions
(PEARL's collection with the posterior updated once per trajectory). Actions are sampled from the policy.

Replay. A trial is a task: PEARL's per-task buffers become a buffer of trials (``pearl.buffer_trials``, first in first
out), and every gradient step draws ``pearl.batch_tasks`` trials, then from each trial ``pearl.context_size`` context
transitions and ``pearl.batch_size`` RL transitions (uniformly, with replacement). Unlike PEARL there is no separate
encoder buffer: context and RL batch come from the whole trial.

One gradient step (SAC with twin Q critics and an automatic temperature, Haarnoja et al. 2018b, where PEARL used a V
network and a fixed temperature; ``reward_scale`` is kept):

    z = mu + sigma * eps, (mu, sigma^2) = q(z | c) (reparameterized)
    y = reward_scale * r + gamma * (1 - terminal) * (min_k Q'_k(s', a', z) - alpha * log pi(a' | s', z)),
        a' ~ pi(. | s', z), no gradient
    critic + encoder loss: sum_k mean (Q_k(s, a, z) - y)^2 + kl_lambda * sum_tasks KL(q(z | c) || N(0, I))
    policy loss: mean (alpha * log pi(a | s, z) - min_k Q_k(s, a, z)), a ~ pi(. | s, z), z detached
    temperature loss: -mean log_alpha * (log pi(a | s, z) + target_entropy * action_dim), detached log pi

The encoder learns through the critics' loss and the KL only, never through the policy's. Terminal means an end by
a terminal state; an end by the step limit bootstraps. Theta (encoder and policy) and the critics each have an Adam
(learning rate ``pearl.lr``); the target critics follow by Polyak averaging (``pearl.tau``). Every draw of an
iteration comes from its ``generation_seed``: runs and resumes are exact.
"""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import Tensor

from metods_evo.config import ConfigError, RunConfig, generation_seed
from metods_evo.models import build_model
from metods_evo.models.params import ParamSpec
from metods_evo.models.pearl import PEARL, init_mlp, mlp, mlp_shapes, posterior
from metods_evo.optimizers.base import OptimizerDeclaration
from metods_evo.tasks import TASKS, make_task

CRITIC_STREAM = 9  # seed stream of the critics' initial weights


def critic_target(reward: Tensor, terminal: Tensor, next_q_min: Tensor, next_log_prob: Tensor, alpha: Tensor | float,
                  reward_scale: float, gamma: float) -> Tensor:
    """SAC's soft Bellman target: r * scale + gamma * (1 - terminal) * (min(Q1', Q2') - alpha * log pi')."""
    return reward * reward_scale + gamma * (1 - terminal.to(reward.dtype)) * (next_q_min - alpha * next_log_prob)


def gaussian_kl(mean: Tensor, variance: Tensor) -> Tensor:
    """KL(N(mean, variance) || N(0, I)) summed over the last axis."""
    return 0.5 * (variance + mean.square() - 1 - variance.log()).sum(-1)


@torch.no_grad()
def play_trials(model: PEARL, params: dict[str, Tensor], task, trials: int, episodes: int, generator: torch.Generator,
                *, explore: bool) -> tuple[dict[str, Tensor], Tensor]:
    """Play ``trials`` trials of ``episodes`` episodes each, stepped as one batch (module docstring) -> (transitions
    ``{field: [trials, episodes * T, ...]}``, each episode's return ``[episodes, trials]``). ``explore``: sample the
    policy's actions; else play tanh(mean) (PEARL's evaluation)."""
    steps, device = task.max_steps, task.device
    reset_seed = int(torch.randint(2**62, (), generator=generator, device=generator.device))
    zeros = torch.zeros
    store = {"obs": zeros(trials, episodes, steps, model.obs_dim, device=device),
             "action": zeros(trials, episodes, steps, model.action_dim, device=device),
             "reward": zeros(trials, episodes, steps, device=device),
             "next_obs": zeros(trials, episodes, steps, model.obs_dim, device=device),
             "terminal": zeros(trials, episodes, steps, dtype=torch.bool, device=device),
             "valid": zeros(trials, episodes, steps, dtype=torch.bool, device=device)}
    returns = zeros(episodes, trials, device=device)
    latent = model.latent_dim
    for episode in range(episodes):
        state, obs = task.reset(trials, torch.Generator(device=device).manual_seed(reset_seed))
        if episode == 0:
            mean, variance = zeros(trials, latent, device=device), torch.ones(trials, latent, device=device)
        else:
            seen = {k: v[:, :episode].reshape(trials * episode * steps, *v.shape[3:]) for k, v in store.items()}
            context = model.context(seen["obs"], seen["action"], seen["reward"], seen["next_obs"])
            mu_i, variance_i = model.encode(params, context.unsqueeze(0))
            mean, variance = posterior(mu_i.view(trials, -1, latent), variance_i.view(trials, -1, latent),
                                       seen["valid"].view(trials, -1).float())
        z = (mean + variance.sqrt() * torch.randn(trials, latent, generator=generator, device=device)).unsqueeze(0)
        alive = torch.ones(trials, dtype=torch.bool, device=device)
        for t in range(steps):
            noise = torch.randn(1, trials, model.action_dim, generator=generator, device=device) if explore else None
            action = model.sample_action(params, obs.unsqueeze(0), z, noise)[0][0]
            state, next_obs, reward, done = task.step(state, action, generator)
            reward = reward * alive
            for name, value in (("obs", obs), ("action", action), ("reward", reward), ("next_obs", next_obs),
                                ("terminal", done & ~task.time_limit_reached(state)), ("valid", alive)):
                store[name][:, episode, t] = value
            returns[episode] += reward
            alive = alive & ~done
            obs = next_obs
            if not alive.any():
                break
    return {k: v.reshape(trials, episodes * steps, *v.shape[3:]) for k, v in store.items()}, returns


def adaptation_returns(cfg: RunConfig, theta: Tensor, trials: int, seed: int, context_episodes: int = 1) -> list[float]:
    """PEARL's evaluation: the mean return of episode k = 0 .. ``context_episodes`` of ``trials`` trials, episode 0
    with z from the prior, episode k with z from the posterior on the trial's k earlier episodes (deterministic
    actions)."""
    task = make_task(cfg.task, device=cfg.device, **cfg.task_options)
    model = build_model(cfg, task)
    params = model.spec.unflatten(theta.to(cfg.device, torch.float32))
    generator = torch.Generator(device=task.device).manual_seed(seed)
    _, returns = play_trials(model, params, task, trials, context_episodes + 1, generator, explore=False)
    return returns.double().mean(1).tolist()


class PEARLTrainer(OptimizerDeclaration):
    """PEARL's meta-training: batched trial collection, then SAC steps with a latent context (module doc)."""

    sections = ("pearl",)

    @classmethod
    def check_config(cls, cfg: RunConfig) -> None:
        if cfg.model.kind != "pearl":
            raise ConfigError(f"--optimizer pearl trains PEARL's own networks: set model.kind=pearl (got "
                              f"{cfg.model.kind!r})")
        if cfg.eval_action_mode == "sample":
            raise ConfigError("pearl's agent plays its policy's deterministic action: eval_action_mode=sample is "
                              "not supported")
        task = TASKS.lookup(cfg.task).load_class()
        if getattr(task, "num_actions", 0) or (getattr(task, "action_low", -1.0), getattr(task, "action_high", 1.0)) \
                != (-1.0, 1.0):
            raise ConfigError(f"pearl's tanh policy needs continuous actions in [-1, 1]; task {cfg.task!r} has "
                              "other actions")

    @classmethod
    def action_mode(cls, cfg: RunConfig) -> str:
        return "greedy"

    @classmethod
    def detail(cls, cfg: RunConfig) -> str:
        return f"z dim {cfg.model.pearl.latent_dim}, {cfg.pearl.updates} updates / iteration"

    @classmethod
    def resume_problem(cls, cfg: RunConfig, state: dict[str, Any]) -> str:
        held = {"buffer_trials": state["buffer"]["valid"].shape[0], "trial_episodes": state["trial_episodes"]}
        return "; ".join(f"it says pearl.{name}={getattr(cfg.pearl, name)}, checkpoint.pt holds {value}"
                         for name, value in held.items() if value != getattr(cfg.pearl, name))

    @classmethod
    def center_of(cls, state: dict[str, Any]) -> Tensor:
        return state["theta"].detach().clone().cpu()

    def __init__(self, cfg: RunConfig):
        self.cfg, self.pearl = cfg, cfg.pearl
        self.task = make_task(cfg.task, device=cfg.device, **cfg.task_options)
        if (self.task.action_low, self.task.action_high) != (-1.0, 1.0):
            raise ConfigError(f"pearl's tanh policy acts in [-1, 1]; task {cfg.task!r} has actions in "
                              f"[{self.task.action_low}, {self.task.action_high}]")
        self.model = build_model(cfg, self.task)
        device, pc, model = self.task.device, cfg.pearl, self.model
        self.theta = torch.nn.Parameter(model.init_params(torch.Generator().manual_seed(cfg.seed)).to(device))
        sizes = [model.obs_dim + model.action_dim + model.latent_dim, *[cfg.model.pearl.hidden] * model.layers, 1]
        shapes = mlp_shapes("q", sizes)
        self.critic_spec = ParamSpec(tuple(shapes), tuple(shapes.values()))
        generator = torch.Generator().manual_seed(generation_seed(cfg.seed, 0, CRITIC_STREAM))
        critics = [self.critic_spec.flatten({k: v.unsqueeze(0) for k, v in init_mlp(shapes, generator).items()})
                   for _ in range(2)]
        self.critic = torch.nn.Parameter(torch.cat(critics).to(device))  # [2, Dq]: Q1 and Q2 as a population of two
        self.target_critic = self.critic.detach().clone()
        self.log_alpha = torch.nn.Parameter(torch.zeros((), device=device))
        self.optimizers = {name: torch.optim.Adam([param], lr=pc.lr) for name, param in
                           (("theta", self.theta), ("critic", self.critic), ("log_alpha", self.log_alpha))}
        length = pc.trial_episodes * self.task.max_steps
        self.buffer = {name: torch.zeros(pc.buffer_trials, length, *shape, dtype=dtype, device=device)
                       for name, shape, dtype in (("obs", (model.obs_dim,), torch.float32),
                                                  ("action", (model.action_dim,), torch.float32),
                                                  ("reward", (), torch.float32),
                                                  ("next_obs", (model.obs_dim,), torch.float32),
                                                  ("terminal", (), torch.bool), ("valid", (), torch.bool))}
        self.stored = 0  # trials written so far; the buffer holds the last buffer_trials of them
        self.generation = 0
        self.env_steps = 0

    # ------------------------------------------------------------------ trainer interface
    def step(self) -> dict[str, float]:
        start = time.perf_counter()
        pc = self.pearl
        generator = torch.Generator(device=self.task.device).manual_seed(generation_seed(self.cfg.seed,
                                                                                         self.generation))
        trials = pc.initial_trials if self.generation == 0 else pc.trials
        transitions, returns = play_trials(self.model, self.model.spec.unflatten(self.theta.detach()), self.task,
                                           trials, pc.trial_episodes, generator, explore=True)
        self.store(transitions)
        steps = int(transitions["valid"].sum())
        sums: dict[str, float] = {}
        for _ in range(pc.updates):
            for key, value in self.update(generator).items():
                sums[key] = sums.get(key, 0.0) + value
        self.generation += 1
        self.env_steps += steps
        elapsed = time.perf_counter() - start
        per_episode = returns.double().mean(1)
        return {"train/episode_return": float(per_episode.mean()),
                "pearl/first_episode_return": float(per_episode[0]),
                "pearl/last_episode_return": float(per_episode[-1]),
                **{key: value / max(pc.updates, 1) for key, value in sums.items()},
                "perf/generation_s": elapsed, "perf/steps_per_s": steps / max(elapsed, 1e-9)}

    def center(self) -> Tensor:
        return self.theta.detach().clone().cpu()

    def state_dict(self) -> dict[str, Any]:
        return {"theta": self.center(), "critic": self.critic.detach().cpu().clone(),
                "target_critic": self.target_critic.cpu().clone(), "log_alpha": self.log_alpha.detach().cpu().clone(),
                "optimizers": {name: opt.state_dict() for name, opt in self.optimizers.items()},
                "buffer": {name: value.cpu().clone() for name, value in self.buffer.items()}, "stored": self.stored,
                "trial_episodes": self.pearl.trial_episodes, "generation": self.generation, "env_steps": self.env_steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        device = self.task.device
        with torch.no_grad():
            for param, name in ((self.theta, "theta"), (self.critic, "critic"), (self.log_alpha, "log_alpha")):
                param.copy_(state[name].to(device))
        self.target_critic = state["target_critic"].to(device)
        for name, opt in self.optimizers.items():
            opt.load_state_dict(state["optimizers"][name])
        self.buffer = {name: value.to(device) for name, value in state["buffer"].items()}
        self.stored, self.generation, self.env_steps = state["stored"], state["generation"], state["env_steps"]

    def close(self) -> None:
        pass

    # ------------------------------------------------------------------ replay
    def store(self, transitions: dict[str, Tensor]) -> None:
        capacity = self.pearl.buffer_trials
        count = transitions["valid"].shape[0]
        rows = (self.stored + torch.arange(count, device=self.task.device)) % capacity
        keep = slice(max(count - capacity, 0), count)  # more trials than the buffer holds: the last ones
        for name, value in transitions.items():
            self.buffer[name][rows[keep]] = value[keep]
        self.stored += count

    def sample(self, generator: torch.Generator) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """(context ``{field: [tasks, context_size, ...]}``, RL batch ``{field: [tasks, batch_size, ...]}``)."""
        pc = self.pearl
        held = min(self.stored, pc.buffer_trials)
        tasks = torch.randint(held, (pc.batch_tasks,), generator=generator, device=generator.device)
        weights = self.buffer["valid"][tasks].float()
        out = []
        for size in (pc.context_size, pc.batch_size):
            index = torch.multinomial(weights, size, replacement=True, generator=generator)
            out.append({name: value[tasks.unsqueeze(1), index] for name, value in self.buffer.items()})
        return out[0], out[1]

    # ------------------------------------------------------------------ one gradient step
    def critics(self, critic: Tensor, obs: Tensor, action: Tensor, z: Tensor) -> Tensor:
        """Q1 and Q2 ``[2, N]`` of inputs ``[N, ...]`` (``critic``: the flat ``[2, Dq]`` weights)."""
        x = torch.cat([obs, action, z], -1).unsqueeze(0).expand(2, -1, -1)
        return mlp(self.critic_spec.unflatten(critic), "q", self.model.layers, x)[..., 0]

    def losses(self, generator: torch.Generator) -> dict[str, Tensor]:
        """One batch's losses (module docstring): ``critic`` (with the encoder's KL term), ``policy``, ``alpha``, and
        what the metrics report."""
        pc, model = self.pearl, self.model
        context, batch = self.sample(generator)
        tasks, size, latent = pc.batch_tasks, pc.batch_size, model.latent_dim
        params = model.spec.unflatten(self.theta)
        mu_i, variance_i = model.encode(params, model.context(
            context["obs"], context["action"], context["reward"], context["next_obs"]).view(1, -1, model.context_dim))
        mean, variance = posterior(mu_i.view(tasks, -1, latent), variance_i.view(tasks, -1, latent))
        z = mean + variance.sqrt() * torch.randn(tasks, latent, generator=generator, device=generator.device)
        kl = gaussian_kl(mean, variance).sum()
        flat = {name: value.reshape(tasks * size, *value.shape[2:]) for name, value in batch.items()}
        z = z.unsqueeze(1).expand(tasks, size, latent).reshape(tasks * size, latent)
        alpha = self.log_alpha.detach().exp()

        def act(obs: Tensor) -> tuple[Tensor, Tensor]:
            noise = torch.randn(1, tasks * size, model.action_dim, generator=generator, device=generator.device)
            action, log_prob = model.sample_action(params, obs.unsqueeze(0), z.detach().unsqueeze(0), noise)
            return action[0], log_prob[0]

        with torch.no_grad():
            next_action, next_log_prob = act(flat["next_obs"])
            next_q = self.critics(self.target_critic, flat["next_obs"], next_action, z).min(0).values
            target = critic_target(flat["reward"], flat["terminal"], next_q, next_log_prob, alpha, pc.reward_scale,
                                   pc.gamma)
        q = self.critics(self.critic, flat["obs"], flat["action"], z)  # the encoder learns through this loss
        critic_loss = (q - target).square().mean(1).sum()
        action, log_prob = act(flat["obs"])
        policy_loss = (alpha * log_prob - self.critics(self.critic, flat["obs"], action, z.detach()).min(0).values
                       ).mean()
        target_entropy = pc.target_entropy * model.action_dim
        alpha_loss = -(self.log_alpha * (log_prob.detach() + target_entropy)).mean()
        return {"critic": critic_loss + pc.kl_lambda * kl, "policy": policy_loss, "alpha": alpha_loss,
                "critic_loss": critic_loss, "policy_loss": policy_loss, "kl": kl / tasks, "alpha_value": alpha,
                "q_mean": q.mean(), "entropy": -log_prob.mean(), "z_std": variance.sqrt().mean()}

    def update(self, generator: torch.Generator) -> dict[str, float]:
        """One gradient step of theta, the critics and the temperature; the targets follow."""
        losses = self.losses(generator)
        encoder_grad, critic_grad = torch.autograd.grad(losses["critic"], (self.theta, self.critic))
        (policy_grad,) = torch.autograd.grad(losses["policy"], self.theta)  # policy entries only: z is detached
        (alpha_grad,) = torch.autograd.grad(losses["alpha"], self.log_alpha)
        for name, grad in (("theta", encoder_grad + policy_grad), ("critic", critic_grad), ("log_alpha", alpha_grad)):
            param = self.optimizers[name].param_groups[0]["params"][0]
            param.grad = grad
            self.optimizers[name].step()
            param.grad = None
        with torch.no_grad():
            self.target_critic.lerp_(self.critic, self.pearl.tau)
        stats = ("critic_loss", "policy_loss", "kl", "q_mean", "entropy", "z_std")
        return {f"pearl/{name}": float(losses[name].detach()) for name in stats} | {
            "pearl/alpha": float(losses["alpha_value"])}


__all__ = ["PEARLTrainer", "adaptation_returns", "critic_target", "gaussian_kl", "play_trials"]
