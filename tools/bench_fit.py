"""Time of a training step in ``capszoo train``'s loop with the NaN guard synchronous, asynchronous
and absent.

Not a test: a measurement, meant for an accelerator. Reading a step's loss in a callback makes
the loop wait for the device before it prepares the next batch; the guard did so at every step
until ``NanGuard.async_safe`` (JAX and PyTorch backends). Where a step's host work (the input
pipeline, Keras' loop, dispatch) is comparable with its device work, as for these small models
on a GPU, that wait adds the two up. On a CPU both share the same cores, and what differs is lost
in the noise (README).

For each entry it builds and compiles the model once, warms it up on the entry's real training
stream (data and augmentation as trained), then times ``fit`` over ``--steps`` steps per variant
in interleaved rounds (round k times every variant before round k+1), so that the machine's drift
hits all alike, and reports the median ms per step and the ratio sync / async (above 1: the
asynchronous guard is faster).

    CAPSZOO_DATA_DIR=DIR python tools/bench_fit.py --entries ara-cifar10,ara-fashion-mnist

Prints a Markdown table and writes JSON (``--json``).
"""

from __future__ import annotations

import argparse
import statistics

from benchlib import interleaved, save_json


def variants():
    from capszoo.training import NanGuard

    class SyncGuard(NanGuard):
        async_safe = False  # Keras then calls it inside the loop, which waits for every step

    return {"sync": lambda: [SyncGuard()], "async": lambda: [NanGuard()], "none": lambda: []}


def step_times(entry, rounds, steps, warmup=20):
    """``{variant: [ms per step, one per round]}`` for one zoo entry or config."""
    import keras

    from capszoo.config import load_config
    from capszoo.data import load_splits, make_dataset
    from capszoo.training import build_model

    config = load_config(entry)
    splits = load_splits(config)
    model = build_model(config, precision=config.training.precision)
    stream = make_dataset(*splits.train, config, training=True)
    model.fit(stream, epochs=1, steps_per_epoch=warmup, shuffle=False, verbose=0)
    runs = {variant: lambda make=make: model.fit(stream, epochs=1, steps_per_epoch=steps, shuffle=False, verbose=0,
                                                 callbacks=make())
            for variant, make in variants().items()}
    times = interleaved(runs, rounds)
    keras.backend.clear_session()
    return {variant: [t / steps * 1e3 for t in seconds] for variant, seconds in times.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", default="ara-cifar10,ara-fashion-mnist",
                        help="comma-separated zoo entries or configs")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=200, help="timed steps per variant per round")
    parser.add_argument("--warmup", type=int, default=20, help="untimed steps first (compiling)")
    parser.add_argument("--json", default="bench-results/fit.json")
    args = parser.parse_args(argv)

    import keras

    from capszoo.training import hardware, versions

    rows = []
    for entry in filter(None, args.entries.split(",")):
        times = step_times(entry, args.rounds, args.steps, args.warmup)
        median = {v: statistics.median(t) for v, t in times.items()}
        rows.append({"entry": entry, "ms_per_step": median, "rounds": times,
                     "ratio_sync_to_async": median["sync"] / median["async"]})
    device = hardware()["accelerators"] or [hardware()["cpu"]]
    print(f"backend {keras.backend.backend()} on {', '.join(device)}, {args.rounds} rounds of {args.steps} steps\n")
    print("| entry | sync guard ms/step | async guard ms/step | no guard ms/step | sync / async |")
    print("|---|---:|---:|---:|---:|")
    for row in rows:
        ms = row["ms_per_step"]
        print(f"| {row['entry']} | {ms['sync']:.2f} | {ms['async']:.2f} | {ms['none']:.2f} | "
              f"{row['ratio_sync_to_async']:.2f} |")
    save_json({"rows": rows, "hardware": hardware(), "versions": versions(), "args": vars(args)}, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
