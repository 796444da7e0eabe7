"""Smoke test of ``benchmarks/roofline.py``: its --quick path at tiny sizes, output structure and accounting only
(no timing claims: rates just have to be positive and finite)."""

import contextlib
import importlib.util
import io
import json
import math
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "roofline.py"
TINY = ["--quick", "--ns", "8", "--depths", "1,2", "--pe", "1,32,1024", "--rollout-pe", "32", "--rollout-n", "8",
        "--rollout-depth", "2", "--min-seconds", "0.001", "--repeats", "2", "--copy-mib", "8", "--copy-repeats", "2",
        "--max-gib", "0.0001"]  # 0.0001 GiB: N = 8 fits up to P x E = 32, P x E = 1024 is skipped


@pytest.fixture(scope="module")
def roofline():
    spec = importlib.util.spec_from_file_location("roofline", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def report(roofline):
    """(stdout text, parsed JSON) of one tiny ``--quick --json`` run; torch's thread count restored after it."""
    threads = torch.get_num_threads()
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            code = roofline.main([*TINY, "--json"])
    finally:
        torch.set_num_threads(threads)
    assert code == 0
    text = out.getvalue()
    return text, json.loads(text[text.index("\n{") + 1:])


def positive(x):
    return math.isfinite(x) and x > 0


def test_bandwidth_limit_is_the_best_copy(report):
    _, res = report
    bw = res["bandwidth"]
    values = [m["bytes_per_s"] for m in bw["measurements"]]
    assert len(values) == 1 + 1 + 2  # start, after the one N, after each of the two tasks
    assert all(positive(v) for v in values)
    assert bw["limit_bytes_per_s"] == max(values)
    assert all(positive(v) for v in bw["cache_sized_copies_bytes_per_s"].values())


def test_plastic_rows_and_roofline_accounting(roofline, report):
    _, res = report
    bw = res["bandwidth"]["limit_bytes_per_s"]
    rows = res["plastic_step"]
    assert [(r["n"], r["depth"], r["agents"]) for r in rows] == [(8, 1, 1), (8, 1, 32), (8, 2, 1), (8, 2, 32)]
    assert [(s["depth"], s["pe"]) for s in res["skipped"]] == [(1, 1024), (2, 1024)]
    for r in rows:
        assert r["pop"] * r["episodes"] == r["agents"]
        assert all(positive(x) for x in [r["plastic_rate"], r["step_rate"], *r["plastic_rates"], *r["step_rates"]])
        minimum = 2 * r["n"] ** 2 * 4  # read W once + write it once, float32
        assert roofline.min_bytes_per_agent_step(r["n"]) == minimum
        assert r["plastic_gb_per_s"] == pytest.approx(r["plastic_rate"] * minimum / 1e9)
        assert r["plastic_fraction"] == pytest.approx(r["plastic_rate"] * minimum / bw)
        assert r["step_fraction"] == pytest.approx(r["step_rate"] * minimum / bw)
        impl = (r["depth"] + 8) * r["n"] ** 2 * 4
        assert r["plastic_impl_fraction"] == pytest.approx(r["plastic_rate"] * impl / bw)


def test_rollout_rows(report):
    _, res = report
    bw = res["bandwidth"]["limit_bytes_per_s"]
    rows = res["rollout"]
    assert [(r["task"], r["write"], r["agents"]) for r in rows] == [("harlow", "linear", 32), ("maze", "linear", 32)]
    for r in rows:
        assert positive(r["rate"]) and all(positive(x) for x in r["rates"])
        assert positive(r["loop_rate"]) and len(r["loop_rates"]) == len(r["rates"])
        assert 0 < r["live_fraction"] <= 1 and r["env_steps"] > 0
        assert r["fraction"] == pytest.approx(r["rate"] * 2 * r["n"] ** 2 * 4 / bw)
        assert r["loop_fraction"] == pytest.approx(r["loop_rate"] * 2 * r["n"] ** 2 * 4 / bw)
        assert not r["fused"] and r["same_returns"] == 1.0  # 32 agents: below the fused rollout's 'auto' size


def test_text_report(report):
    text, _ = report
    for line in ("memory-bandwidth limit:", "plastic layer step", "full rollout", "agent-steps/s", "frac@impl",
                 "skipped (plastic_step"):
        assert line in text


def test_population_shape_and_memory_guard(roofline):
    assert roofline.population_shape(1, 16) == (1, 1)
    assert roofline.population_shape(4096, 16) == (256, 16)
    assert roofline.population_shape(100000, 16) == (6250, 16)
    assert roofline.population_shape(10, 16) == (1, 10)
    assert roofline.fits(16384, 128, 4.0) and not roofline.fits(65536, 128, 4.0)
