"""Would storing the zoo's weights as float16 change what they measure?

The zoo issue allows float16 storage, cast back to float32 on load, only if the measured test
accuracy is unchanged to 0.05 points. For each trained entry this loads the published float32
weights, measures test accuracy and loss, stores them as float16 the way ``capszoo publish
--weights-dtype float16`` does, loads that file into a fresh model and measures again on the
same split with the same code (``capszoo.training.evaluate``).

    CAPSZOO_DATA_DIR=../shared/datasets PYTHONPATH=. .venv/bin/python tools/float16_weights.py
    ... tools/float16_weights.py --entries ara-digits,ara-mnist

Prints a Markdown table and writes JSON (``--json``).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from benchlib import save_json


def compare(name):
    """Both measurements of one entry, the float16 one on the file ``publish --weights-dtype
    float16`` would write (:func:`capszoo.runs.save_weights`), loaded as users load it."""
    import tempfile

    from capszoo import zoo
    from capszoo.runs import load_weights_checked, save_weights
    from capszoo.training import evaluate

    model = zoo.load(name, compile=False)
    start = time.perf_counter()
    full = evaluate(model, name)
    weights = model.get_weights()
    with tempfile.TemporaryDirectory() as tmp:
        stored = save_weights(model, Path(tmp) / "float16.weights.h5", "float16")
        half = evaluate(load_weights_checked(zoo.load(name, weights=None, compile=False), stored), name)
    return {"entry": name, "float32_accuracy": full["accuracy"], "float16_accuracy": half["accuracy"],
            "float32_loss": full["loss"], "float16_loss": half["loss"], "examples": full["examples"],
            "change_points": 100 * (half["accuracy"] - full["accuracy"]),
            "float32_bytes": sum(w.nbytes for w in weights), "float16_bytes": sum(w.nbytes // 2 for w in weights),
            "seconds": time.perf_counter() - start}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", help="comma-separated zoo entries (default: every trained one)")
    parser.add_argument("--json", default="bench-results/float16.json")
    args = parser.parse_args(argv)

    from capszoo import zoo
    from capszoo.training import hardware, versions

    tolerance = zoo.FLOAT16_TOLERANCE_POINTS

    names = args.entries.split(",") if args.entries else zoo.list_models(trained_only=True)
    print("| entry | test images | float32 accuracy | float16 accuracy | change (points) | "
          f"within {tolerance} |")
    print("|---|---:|---:|---:|---:|---|")
    rows = []
    for name in names:
        row = compare(name)
        rows.append(row)
        within = abs(row["change_points"]) <= tolerance
        print(f"| `{name}` | {row['examples']:,} | {100 * row['float32_accuracy']:.2f} % | "
              f"{100 * row['float16_accuracy']:.2f} % | {row['change_points']:+.2f} | {'yes' if within else 'no'} |",
              flush=True)
        save_json({"rows": rows, "hardware": hardware(), "versions": versions(), "args": vars(args)}, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
