"""Print the name of the run folder whose last epoch has the highest val_accuracy.

    python tools/best_run.py RUN_DIR [RUN_DIR...]

Used by device_train.sh to send back only the weights of the member of a sweep chosen on
validation data (never on the test split). Runs without a validation column are refused. A model
with a reconstruction decoder logs its accuracy as ``val_class_scores_accuracy`` (Keras names a
metric after its output when a model has several), so a sweep may mix both kinds.

Only a run that trained all its planned epochs has a final validation accuracy: its metrics.json,
which ``capszoo train`` writes when it returns, says so. A run still going, killed, or stopped by
``--time-limit`` short of its schedule is named on stderr and left out (the epoch column of the
last row of history.csv says where a run ends: one continued from another run's weights logs only
its own epochs), and so is a run with no
epoch logged (no folder, no history.csv, or an empty one: it failed before its first epoch ended);
with none finished, the command fails and prints nothing on stdout.
"""

import argparse
import csv
import json
import sys
from pathlib import Path

COLUMNS = ("val_accuracy", "val_class_scores_accuracy")


def epochs_short(run, rows):
    """Why ``run`` has no final epoch yet, or None when its history ends where its schedule does."""
    metrics = Path(run) / "metrics.json"
    if not metrics.is_file():
        return f"no metrics.json after {len(rows)} epoch(s) in history.csv (still training, or killed)"
    try:
        metrics = json.loads(metrics.read_text())
    except ValueError:
        return "its metrics.json is not valid JSON"
    planned = metrics.get("epochs_planned")
    if planned is None:
        return "metrics.json does not say how many epochs were planned"
    # A run continued from other weights (--from-zoo, --from-run) logs only its own epochs, so the
    # last row's epoch index, not the number of rows, says where its history ends.
    try:
        last = int(float(rows[-1]["epoch"])) + 1
    except (KeyError, TypeError, ValueError):
        return "history.csv has no epoch column"
    if metrics.get("epochs") != planned or last != planned:
        return f"stopped after {last} of {planned} epochs"
    return None


def final_val_accuracy(run):
    """The last epoch's validation accuracy of a run that trained all its planned epochs, else None."""
    history = Path(run) / "history.csv"
    rows = list(csv.DictReader(history.open())) if history.is_file() else []
    if not rows:
        why = ("no such run folder" if not Path(run).is_dir() else
               "no history.csv" if not history.is_file() else "no epoch in history.csv")
        print(f"{Path(run).name}: no final val_accuracy, {why} (it ended before its first epoch, or never started)",
              file=sys.stderr)
        return None
    column = next((c for c in COLUMNS if rows and rows[-1].get(c) not in (None, "", "NA")), None)
    if column is None:
        raise SystemExit(f"{run}: history.csv has no val_accuracy (train with data.validation_fraction > 0)")
    short = epochs_short(run, rows)
    if short is not None:
        print(f"{Path(run).name}: no final val_accuracy, {short}", file=sys.stderr)
        return None
    return float(rows[-1][column])


def main(runs):
    scores = {run: final_val_accuracy(run) for run in runs}
    scores = {run: score for run, score in scores.items() if score is not None}
    if not scores:
        raise SystemExit("no run has trained all its planned epochs")
    for run, score in scores.items():
        print(f"{Path(run).name}: final val_accuracy {score:.4f}", file=sys.stderr)
    print(Path(max(scores, key=scores.get)).name)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run folders written by capszoo train")
    main(parser.parse_args().runs)
