"""Run-directory files: metrics survive a resume byte for byte, and cut-short lines are dropped."""

from metods_evo.runs import RunDir


def test_truncate_metrics_keeps_rows_byte_for_byte(tmp_path):
    run = RunDir(tmp_path)
    for generation in (1, 2, 3):
        run.append_metrics({"generation": generation, "env_steps": 52_345_678 * generation, "x": 0.123456789})
    with open(run.file("metrics.csv"), "a") as handle:
        handle.write("4,2093")  # a row cut short by SIGKILL
    before = run.file("metrics.csv").read_text().splitlines()
    run.truncate_metrics(2)
    after = run.file("metrics.csv").read_text().splitlines()
    assert after == before[:3] and "104691356" in after[2]
    run.truncate_metrics(9)
    assert run.file("metrics.csv").read_text().splitlines() == before[:3]
    assert [r["generation"] for r in run.read_metrics()] == [1.0, 2.0]
