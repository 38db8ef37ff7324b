"""tools/best_run.py: the sweep member that device_train.sh sends back, chosen on validation data."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def write_run(folder, header, rows, planned=None, metrics=True):
    """A run folder as `capszoo train` leaves it: history.csv, and metrics.json once train returns
    (``planned`` epochs in the config, by default as many as the history has rows)."""
    folder.mkdir()
    lines = [",".join(header)] + [",".join(map(str, row)) for row in rows]
    (folder / "history.csv").write_text("\n".join(lines) + "\n")
    if metrics:
        planned = len(rows) if planned is None else planned
        (folder / "metrics.json").write_text(json.dumps({"epochs": len(rows), "epochs_planned": planned}))
    return folder


def best(*runs):
    return subprocess.run([sys.executable, str(ROOT / "tools" / "best_run.py"), *map(str, runs)],
                          capture_output=True, text=True, timeout=60)


def test_picks_the_highest_final_validation_accuracy_across_plain_and_decoder_runs(tmp_path):
    # the decoder run has the best validation accuracy at an earlier epoch, the plain run at the last
    plain = write_run(tmp_path / "zoo-plain", ["epoch", "accuracy", "val_accuracy"], [(0, 0.9, 0.80), (1, 0.95, 0.90)])
    decoder = write_run(tmp_path / "zoo-decoder", ["epoch", "class_scores_accuracy", "val_class_scores_accuracy"],
                        [(0, 0.9, 0.95), (1, 0.99, 0.89)])
    result = best(plain, decoder)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "zoo-plain"
    assert "zoo-decoder: final val_accuracy 0.8900" in result.stderr
    decoder_better = write_run(tmp_path / "zoo-decoder-2", ["epoch", "val_class_scores_accuracy"], [(0, 0.91)])
    assert best(plain, decoder_better).stdout.strip() == "zoo-decoder-2"


def test_refuses_a_run_without_validation_data(tmp_path):
    # a run without a validation split logs its val_ columns as NA (Keras' CSVLogger)
    plain = write_run(tmp_path / "zoo-plain", ["epoch", "accuracy", "val_accuracy"], [(0, 0.9, 0.8)])
    full = write_run(tmp_path / "zoo-full", ["epoch", "accuracy", "val_accuracy", "val_loss"], [(0, 0.99, "NA", "NA")])
    result = best(plain, full)
    assert result.returncode != 0 and result.stdout == ""
    assert "zoo-full: history.csv has no val_accuracy (train with data.validation_fraction > 0)" in result.stderr


def test_a_run_short_of_its_planned_epochs_has_no_final_accuracy_and_is_left_out(tmp_path):
    # the run stopped by --time-limit and the one still training score higher, but at an epoch
    # their schedules have not ended on, so neither can be chosen on a "final" figure
    header = ["epoch", "accuracy", "val_accuracy"]
    done = write_run(tmp_path / "zoo-done", header, [(0, 0.9, 0.80), (1, 0.95, 0.85)])
    cut = write_run(tmp_path / "zoo-cut", header, [(0, 0.9, 0.90), (1, 0.95, 0.91)], planned=50)
    going = write_run(tmp_path / "zoo-going", header, [(0, 0.9, 0.92)], metrics=False)
    result = best(going, cut, done)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "zoo-done"
    assert "zoo-cut: no final val_accuracy, stopped after 2 of 50 epochs" in result.stderr
    assert "zoo-going: no final val_accuracy, no metrics.json after 1 epoch(s) in history.csv" in result.stderr
    assert "zoo-done: final val_accuracy 0.8500" in result.stderr

    broken = write_run(tmp_path / "zoo-broken", header, [(0, 0.9, 0.93)])
    (broken / "metrics.json").write_text('{"epochs": 1, "epo')  # cut off mid-write
    result = best(going, cut, broken)
    assert result.returncode != 0 and result.stdout == ""
    assert "zoo-broken: no final val_accuracy, its metrics.json is not valid JSON" in result.stderr
    assert "no run has trained all its planned epochs" in result.stderr


def test_a_run_continued_from_another_runs_weights_ends_where_its_last_epoch_does(tmp_path):
    # `capszoo train --from-run` logs only its own epochs: 80-89 of a 90-epoch schedule
    header = ["epoch", "accuracy", "val_accuracy"]
    rows = [(epoch, 0.9, 0.90 + epoch / 1000) for epoch in range(80, 90)]
    continued = write_run(tmp_path / "zoo-continued", header, rows, planned=90)
    (continued / "metrics.json").write_text(json.dumps({"epochs": 90, "epochs_planned": 90}))
    cut = write_run(tmp_path / "zoo-cut", header, rows[:4], planned=90)
    (cut / "metrics.json").write_text(json.dumps({"epochs": 84, "epochs_planned": 90}))
    result = best(cut, continued)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "zoo-continued" and "zoo-continued: final val_accuracy 0.9890" in result.stderr
    assert "zoo-cut: no final val_accuracy, stopped after 84 of 90 epochs" in result.stderr


def test_a_run_with_no_epoch_logged_is_left_out_not_a_traceback(tmp_path):
    """A member that crashed before its first epoch ended (no folder, no history.csv, or only its
    header) used to stop the whole choice with FileNotFoundError, or was refused as a run without
    validation data; the loan's rule then packed nothing, even for a member that finished."""
    header = ["epoch", "accuracy", "val_accuracy"]
    done = write_run(tmp_path / "zoo-done", header, [(0, 0.9, 0.80)])
    (tmp_path / "zoo-empty").mkdir()
    header_only = write_run(tmp_path / "zoo-header", header, [], metrics=False)
    result = best(tmp_path / "zoo-missing", tmp_path / "zoo-empty", header_only, done)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "zoo-done"
    for name, why in [("zoo-missing", "no such run folder"), ("zoo-empty", "no history.csv"),
                      ("zoo-header", "no epoch in history.csv")]:
        assert f"{name}: no final val_accuracy, {why} (it ended before its first epoch, or never started)" \
            in result.stderr
    assert "Traceback" not in result.stderr
    usage = best()
    assert usage.returncode == 2 and "the following arguments are required: RUN_DIR" in usage.stderr
