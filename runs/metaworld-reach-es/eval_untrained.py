import json, torch
from metods_evo.runs import RunDir
from metods_evo.evaluate import evaluate_theta
from metods_evo.models import build_model
from metods_evo.tasks import make_task
run = RunDir.open("runs/metaworld-reach-es"); cfg = run.config()
torch.set_num_threads(1)
theta = build_model(cfg, make_task(cfg.task, **cfg.task_options)).init_params(torch.Generator().manual_seed(cfg.seed))
out = {}
for split in ("train", "test"):
    r = evaluate_theta(cfg, theta, 20, seed=314187, task_options={"rollouts": 10, "split": split})
    out[split] = {k: v["mean"] for k, v in r["metrics"].items()}
    print(split, {k: round(v, 3) for k, v in out[split].items() if k in ("return", "success", "success_fraction")}, flush=True)
json.dump(out, open("/tmp/reach_init.json", "w"), indent=1)
