"""Training-step time of zoo entries in float32 against ``training.precision = "mixed_bfloat16"``.

Not a test: a measurement. For each entry it builds the model twice with the same weights, one
per precision, warms both up, then times them in interleaved rounds (round k times float32 then
mixed_bfloat16 before round k+1), so that the machine's drift hits both alike, and reports the
median seconds per training step and the ratio float32 / mixed_bfloat16 (above 1: mixed is faster).

    python tools/bench_precision.py                          # ara-mnist, dra-mnist, batch 128
    python tools/bench_precision.py --entries ara-cifar10 --rounds 5

Prints a Markdown table and writes JSON (``--json``).
"""

from __future__ import annotations

import argparse
import statistics

from benchlib import interleaved, save_json

PRECISIONS = ("float32", "mixed_bfloat16")


def step_times(entry, batch, rounds, steps, warmup=2):
    """``{precision: [seconds per step, one per round]}`` for one zoo entry, on random images."""
    import keras
    import numpy as np

    from capszoo.config import load_config
    from capszoo.training import build_model

    config = load_config(entry)
    models = {p: build_model(config, precision=p) for p in PRECISIONS}
    models["mixed_bfloat16"].set_weights(models["float32"].get_weights())
    rng = np.random.default_rng(0)
    x = rng.random((batch, *config.model.input_shape), dtype="float32")
    y = rng.integers(0, config.model.num_classes, batch)
    for model in models.values():
        for _ in range(warmup):
            model.train_on_batch(x, y)

    def run(model):
        for _ in range(steps):
            model.train_on_batch(x, y)

    times = interleaved({p: lambda model=model: run(model) for p, model in models.items()}, rounds)
    keras.backend.clear_session()
    return {p: [t / steps for t in seconds] for p, seconds in times.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", default="ara-mnist,dra-mnist", help="comma-separated zoo entries or configs")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per precision per round")
    parser.add_argument("--json", default="bench-results/precision.json")
    args = parser.parse_args(argv)

    import keras

    from capszoo.training import hardware, versions

    rows = []
    for entry in filter(None, args.entries.split(",")):
        times = step_times(entry, args.batch, args.rounds, args.steps)
        median = {p: statistics.median(t) for p, t in times.items()}
        rows.append({"entry": entry, "batch": args.batch, "step_s": median, "rounds": times,
                     "ratio_float32_to_mixed": median["float32"] / median["mixed_bfloat16"]})
    print(f"backend {keras.backend.backend()}, batch {args.batch}, {args.rounds} rounds of {args.steps} steps\n")
    print("| entry | float32 s/step | mixed_bfloat16 s/step | float32 / mixed |")
    print("|---|---:|---:|---:|")
    for row in rows:
        print(f"| {row['entry']} | {row['step_s']['float32']:.3f} | {row['step_s']['mixed_bfloat16']:.3f} | "
              f"{row['ratio_float32_to_mixed']:.2f} |")
    save_json({"rows": rows, "hardware": hardware(), "versions": versions(), "args": vars(args)}, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
