"""Print the name of the run folder whose last epoch has the highest val_accuracy.

    python tools/best_run.py RUN_DIR [RUN_DIR...]

Used by device_train.sh to send back only the weights of the member of a sweep chosen on
validation data (never on the test split). Runs without a validation column are refused. A model
with a reconstruction decoder logs its accuracy as ``val_class_scores_accuracy`` (Keras names a
metric after its output when a model has several), so a sweep may mix both kinds.
"""

import csv
import sys
from pathlib import Path

COLUMNS = ("val_accuracy", "val_class_scores_accuracy")


def final_val_accuracy(run):
    rows = list(csv.DictReader((Path(run) / "history.csv").open()))
    column = next((c for c in COLUMNS if rows and rows[-1].get(c) not in (None, "", "NA")), None)
    if column is None:
        raise SystemExit(f"{run}: history.csv has no val_accuracy (train with data.validation_fraction > 0)")
    return float(rows[-1][column])


def main(runs):
    scores = {run: final_val_accuracy(run) for run in runs}
    for run, score in scores.items():
        print(f"{Path(run).name}: final val_accuracy {score:.4f}", file=sys.stderr)
    print(Path(max(scores, key=scores.get)).name)


if __name__ == "__main__":
    main(sys.argv[1:])
