"""``benchmarks/roofline.py``: its --quick path at tiny sizes (output structure; rates just have to be positive and
finite, no timing claims), and its accounting on timings replaced by known numbers, against hand-computed figures."""

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


@pytest.mark.slow
def test_bandwidth_limit_is_the_best_copy(report):
    _, res = report
    bw = res["bandwidth"]
    values = [m["bytes_per_s"] for m in bw["measurements"]]
    assert len(values) == 1 + 1 + 2  # start, after the one N, after each of the two tasks
    assert all(positive(v) for v in values)
    assert bw["limit_bytes_per_s"] == max(values)
    assert all(positive(v) for v in bw["cache_sized_copies_bytes_per_s"].values())


def test_plastic_and_rollout_rows(report):
    _, res = report
    rows = res["plastic_step"]
    assert [(r["n"], r["depth"], r["agents"]) for r in rows] == [(8, 1, 1), (8, 1, 32), (8, 2, 1), (8, 2, 32)]
    assert [(s["depth"], s["pe"]) for s in res["skipped"]] == [(1, 1024), (2, 1024)]
    for r in rows:
        assert r["pop"] * r["episodes"] == r["agents"]
        assert all(positive(x) for x in [r["plastic_rate"], r["step_rate"], *r["plastic_rates"], *r["step_rates"]])
        assert all(positive(r[k]) for k in ("plastic_fraction", "plastic_impl_fraction", "step_fraction"))
    rows = res["rollout"]
    assert [(r["task"], r["write"], r["agents"]) for r in rows] == [("harlow", "linear", 32), ("maze", "linear", 32)]
    for r in rows:
        assert positive(r["rate"]) and all(positive(x) for x in r["rates"])
        assert positive(r["loop_rate"]) and len(r["loop_rates"]) == len(r["rates"])
        assert 0 < r["live_fraction"] <= 1 and r["env_steps"] > 0
        assert positive(r["fraction"]) and positive(r["loop_fraction"])
        assert not r["fused"] and r["same_returns"] == 1.0  # 32 agents: below the fused rollout's 'auto' size


def test_accounting_on_hand_computed_numbers(roofline, monkeypatch):
    """Timings replaced by known numbers, so that every figure the report derives can be worked out by hand.

    Copies: 4, 8, 6 GB/s at the start, after N = 8 and after the Harlow rollout; the 1 and 16 MiB cache probes 50 and 20
    GB/s, faster but not the limit: the limit is 8 GB/s. Timed blocks: 3, 1, 2 M agent-steps/s, so a point timed in
    three blocks has median 2e6 and a rollout (one block per repeat) 3e6. At N = 8 an agent-step moves at least
    2 x 64 x 4 = 512 B: 2e6/s is 1.024 GB/s, 0.128 of the limit; 3e6/s is 1.536 GB/s, 0.192. The unfused step's
    (S + 8) x 64 x 4 B: 2304 B at S = 1 (4.608 GB/s, 0.576), 2560 B at S = 2 (5.12 GB/s, 0.64)."""
    limit_copies = iter([4e9, 8e9, 6e9])
    monkeypatch.setattr(roofline, "copy_bandwidth",
                        lambda mib, repeats, device: {1: 50e9, 16: 20e9}.get(mib) or next(limit_copies))

    monkeypatch.setattr(roofline, "measure", lambda call, min_seconds, repeats, warmup, device=None:
                        [3e6, 1e6, 2e6][:repeats])
    threads, out = torch.get_num_threads(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            res = roofline.run(roofline.parse_args(
                ["--ns", "8", "--depths", "1,2", "--pe", "1", "--tasks", "harlow", "--writes", "linear", "--rollout-pe",
                 "32", "--rollout-n", "8", "--rollout-depth", "2", "--repeats", "3", "--copy-mib", "8"]))
            roofline.print_report(res)
    finally:
        torch.set_num_threads(threads)
    assert res["bandwidth"]["limit_bytes_per_s"] == 8e9
    assert [c["bytes_per_s"] for c in res["bandwidth"]["measurements"]] == [4e9, 8e9, 6e9]
    assert roofline.min_bytes_per_agent_step(8) == 512
    impl = {1: (2304, 0.576), 2: (2560, 0.64)}  # S -> (the unfused step's bytes per agent-step, frac@impl)
    for r in res["plastic_step"]:
        assert roofline.impl_bytes_per_agent_step(8, r["depth"]) == impl[r["depth"]][0]
        assert (r["plastic_rate"], r["step_rate"]) == (2e6, 2e6)
        assert r["plastic_gb_per_s"] == pytest.approx(1.024) and r["step_gb_per_s"] == pytest.approx(1.024)
        assert r["plastic_fraction"] == pytest.approx(0.128) and r["step_fraction"] == pytest.approx(0.128)
        assert r["plastic_impl_fraction"] == pytest.approx(impl[r["depth"]][1])
    assert [(r["task"], r["write"]) for r in res["rollout"]] == [("harlow", "linear")]
    for r in res["rollout"]:
        assert (r["rate"], r["loop_rate"]) == (3e6, 3e6)
        assert r["gb_per_s"] == pytest.approx(1.536) and r["fraction"] == pytest.approx(0.192)
        assert r["loop_gb_per_s"] == pytest.approx(1.536) and r["loop_fraction"] == pytest.approx(0.192)
    # the printed tables show those numbers (whitespace aside)
    lines = [" ".join(line.split()) for line in out.getvalue().splitlines()]
    assert "memory-bandwidth limit: 8.00 GB/s" in lines[1] and "4.00, 8.00, 6.00 GB/s" in lines[1]
    assert "1 MiB: 50.00 GB/s, 16 MiB: 20.00 GB/s" in lines[2]
    assert "8 1 1 1 1 0.000 | 2e+06 1.024 0.128 0.576 | 2e+06 0.128" in lines
    assert "8 2 1 1 1 0.000 | 2e+06 1.024 0.128 0.640 | 2e+06 0.128" in lines
    rollout_row = "| 3e+06 1.54 0.192 | 3e+06 0.192 | 1.00"  # rollout/s GB/s frac | loop/s frac | ratio
    assert any(line.startswith("harlow linear 8 2 32 2 16 0.008") and line.endswith(rollout_row) for line in lines)


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
