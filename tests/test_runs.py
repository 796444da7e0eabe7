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


def test_metrics_widen_when_a_resumed_run_logs_new_columns(tmp_path):
    run = RunDir(tmp_path)
    run.append_metrics({"generation": 1, "loss": 0.5})
    run.append_metrics({"generation": 2, "loss": 0.25, "plastic/w_at_bound": 0.125})  # a newer trainer's row
    run.append_metrics({"generation": 3, "loss": 0.75})  # and a row without it
    lines = run.file("metrics.csv").read_text().splitlines()
    assert lines == ["generation,loss,plastic/w_at_bound", "1,0.5,", "2,0.25,0.125", "3,0.75,"]
    rows = run.read_metrics()
    assert [r["generation"] for r in rows] == [1.0, 2.0, 3.0] and rows[1]["plastic/w_at_bound"] == 0.125
