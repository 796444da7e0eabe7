"""The main job itself: `metods-evo train` (ES on Harlow with the documented defaults) must solve Harlow.

This is the reproduction gate's `harlow-es` headline on two seeds, trained from scratch by today's code exactly as a
user's `metods-evo train --seed S` would be (both seeds at once, one process each). It fails when either seed's
final evaluation (the best theta on 1000 fresh episodes) is below 3.8.

It costs about 16 core-minutes (each seed about 8 minutes of one core), more than the rest of the suite, so it is
marked ``gate``: plain ``pytest`` leaves it out and ``pytest -m gate`` runs it; CI runs both.
"""

import pytest

from metods_evo import fused_rollout
from metods_evo.gate import HEADLINES, gate


@pytest.mark.slow
@pytest.mark.gate
@pytest.mark.skipif(not fused_rollout.available(), reason="without the fused kernels a run takes far longer")
def test_metods_evo_train_solves_harlow_on_two_seeds(tmp_path):
    result = gate(["harlow-es"], tmp_path, seeds=2, jobs=2, progress=False)
    rows = result["results"]["harlow-es"]
    assert [r["seed"] for r in rows] == [0, 1]
    scores = [r["scores"]["all"] for r in rows]
    assert all(r["passed"] for r in rows), f"final returns {scores} (threshold {HEADLINES['harlow-es'].threshold})"
