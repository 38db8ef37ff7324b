"""Print the name of the run folder whose last epoch has the highest val_accuracy.

    python tools/best_run.py RUN_DIR [RUN_DIR...]

Used by device_train.sh to send back only the weights of the member of a sweep chosen on
validation data (never on the test split). Runs without a validation column are refused.
"""

import csv
import sys
from pathlib import Path


def final_val_accuracy(run):
    rows = list(csv.DictReader((Path(run) / "history.csv").open()))
    if not rows or "val_accuracy" not in rows[-1]:
        raise SystemExit(f"{run}: history.csv has no val_accuracy (train with data.validation_fraction > 0)")
    return float(rows[-1]["val_accuracy"])


def main(runs):
    scores = {run: final_val_accuracy(run) for run in runs}
    for run, score in scores.items():
        print(f"{Path(run).name}: final val_accuracy {score:.4f}", file=sys.stderr)
    print(Path(max(scores, key=scores.get)).name)


if __name__ == "__main__":
    main(sys.argv[1:])
