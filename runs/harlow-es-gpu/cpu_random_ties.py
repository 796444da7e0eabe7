"""Diagnostic: the Harlow ES defaults on the CPU with ties between fitnesses broken at random (1e-6 jitter)."""
import sys
import torch
import metods_evo.optimizers.es as es
from metods_evo.config import make_config

orig = es.score
jitter_gen = torch.Generator().manual_seed(123)
def jittered(result, metric):
    f = orig(result, metric)
    return f + 1e-6 * torch.randn(f.shape, generator=jitter_gen).to(f)
es.score = jittered
torch.set_num_threads(1)
cfg = make_config("harlow", "es", {})
trainer = es.ESTrainer(cfg)
for g in range(cfg.generations):
    m = trainer.step()
    if g % 50 == 0 or g == cfg.generations - 1:
        print(g + 1, trainer.env_steps, round(m["es/fitness_mean"], 3), round(m["es/fitness_best"], 3), flush=True)
