"""Training-step throughput and peak memory of CapsNet2/3/4 under each routing strategy.

Not a test: a measurement. For every input shape it

1. measures each configuration's peak memory (resident set size of a fresh process that builds
   the model and runs two training steps) in a subprocess that is killed when it exceeds
   ``--memory-cap-gib``; a configuration that does not fit is retried at half the batch until
   one fits, and reported with the largest batch that fits;
2. times the configurations that fit in ONE process, in interleaved rounds (round k times every
   configuration of a group once before round k+1 starts), so that the machine's drift hits all
   of them alike, and reports each configuration's step time per image as a ratio to the
   backbone floor of the same round (median over rounds). The floor is the same network with
   the capsule layers removed: conv -> primary capsules -> flatten -> dense head. Light
   configurations share one group; each one whose peak exceeds ``--group-gib`` is timed in a
   group of its own with the floor, so that the process never holds them all at once.

    python tools/bench.py                       # paper widths, batch 128, 28x28x1 and 32x32x3
    python tools/bench.py --tiny --rounds 1     # smoke run with tiny widths

Prints a Markdown table and writes JSON (``--json``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import time

from benchlib import interleaved, save_json

ROUTINGS = {
    "dynamic r=3": dict(routing="dynamic", iterations=3),
    "dynamic r=3 stop-grad": dict(routing="dynamic", iterations=3, routing_options={"stop_gradient": True}),
    "adaptive r=3": dict(routing="adaptive", iterations=3),
    "adaptive_lambda": dict(routing="adaptive_lambda", lam=3.0),
    "uniform": dict(routing="uniform"),
}
MODELS = ("CapsNet2", "CapsNet3", "CapsNet4")
BACKBONE = "backbone"
TINY = dict(conv_filters=16, conv_kernel_size=3, primary_types=4, primary_dim=8, primary_kernel_size=3)
TINY_HIDDEN = {"CapsNet2": (), "CapsNet3": (16,), "CapsNet4": (16, 8)}


def parse_shape(text):
    return tuple(int(d) for d in text.lower().split("x"))


def build(model_name, routing_name, shape, tiny):
    """The model of one configuration, compiled for training."""
    import keras

    import capszoo
    from capszoo.layers import PrimaryCapsule

    widths = TINY if tiny else {}
    if model_name == BACKBONE:
        config = capszoo.ModelConfig(input_shape=shape, **widths)
        model = keras.Sequential([
            keras.Input(shape),
            keras.layers.Conv2D(config.conv_filters, config.conv_kernel_size, activation="relu"),
            PrimaryCapsule(config.primary_types, config.primary_dim, config.primary_kernel_size,
                           config.primary_strides),
            keras.layers.Flatten(),
            keras.layers.Dense(config.num_classes, activation="sigmoid"),
        ], name="backbone")
    else:
        extra = dict(widths, capsules=(*TINY_HIDDEN[model_name], 10)) if tiny else {}
        model = getattr(capszoo, model_name)(input_shape=shape, **ROUTINGS[routing_name], **extra)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=capszoo.MarginLoss())
    return model


def batch_data(shape, batch):
    import numpy as np

    rng = np.random.default_rng(0)
    return rng.random((batch, *shape), dtype="float32"), rng.integers(0, 10, batch)


def configurations(models, routings):
    yield BACKBONE, "-"
    for model in models:
        for routing in routings:
            yield model, routing


# ---- phase 1: memory, one subprocess per configuration ----

def child_main(spec):
    """Build one configuration, run two training steps, print its peak RSS as JSON."""
    model = build(spec["model"], spec["routing"], tuple(spec["shape"]), spec["tiny"])
    x, y = batch_data(tuple(spec["shape"]), spec["batch"])
    for _ in range(2):
        model.train_on_batch(x, y)
    # VmHWM: this process's own high-water mark. (ru_maxrss is not usable here: on Linux it
    # survives fork + exec, so a child reports at least its parent's peak.)
    print(json.dumps({"peak_gib": proc_status_gib(os.getpid(), "VmHWM"), "params": model.count_params()}), flush=True)


def proc_status_gib(pid, field="VmRSS"):
    """A memory field of /proc/PID/status (VmRSS: resident now; VmHWM: resident peak) in GiB."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return 0.0


def measure_memory(spec, cap_gib, timeout_s=900):
    """Run one configuration in a watched child; None if it went over the cap or failed."""
    cmd = [sys.executable, __file__, "--child", json.dumps(spec)]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)
    start, over = time.monotonic(), False
    while proc.poll() is None:
        if proc_status_gib(proc.pid) > cap_gib or time.monotonic() - start > timeout_s:
            over = True
            os.killpg(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.05)
    out, err = proc.communicate()
    if over or proc.returncode != 0:
        if not over:
            print(f"  child failed ({spec['model']} {spec['routing']}): {err.strip().splitlines()[-1:]}",
                  file=sys.stderr)
        return None
    return json.loads(out.strip().splitlines()[-1])


def fit_memory(spec, cap_gib):
    """Peak memory at the requested batch, or the largest power-of-two batch that fits."""
    batch = spec["batch"]
    while batch >= 1:
        result = measure_memory(dict(spec, batch=batch), cap_gib)
        if result is not None:
            return dict(result, batch=batch)
        batch //= 2
    return None


# ---- phase 2: interleaved timing in one process ----

def time_configurations(entries, shape, rounds, steps, tiny):
    """Interleaved timing of ``entries`` (the floor first); fills in step_s, images_per_s, ratio_to_floor."""
    import gc

    import keras

    built = []
    for entry in entries:
        keras.utils.set_random_seed(0)
        model = build(entry["model"], entry["routing"], shape, tiny)
        x, y = batch_data(shape, entry["batch"])
        model.train_on_batch(x, y)  # trace and warm up
        model.train_on_batch(x, y)
        built.append((entry, model, x, y))

    def run(model, x, y):
        for _ in range(steps):
            model.train_on_batch(x, y)

    seconds = interleaved({id(entry): lambda m=model, x=x, y=y: run(m, x, y) for entry, model, x, y in built}, rounds,
                          lambda r: print(f"  round {r + 1}/{rounds} done", file=sys.stderr, flush=True))
    per_round = {key: [t / steps for t in times] for key, times in seconds.items()}
    floor = per_round[id(entries[0])]
    for entry in entries:
        times = per_round[id(entry)]
        per_image = [t / entry["batch"] for t in times]
        floor_per_image = [t / entries[0]["batch"] for t in floor]
        entry["step_s"] = statistics.median(times)
        entry["images_per_s"] = entry["batch"] / entry["step_s"]
        entry["ratio_to_floor"] = statistics.median(a / b for a, b in zip(per_image, floor_per_image, strict=True))
    del built
    keras.backend.clear_session()
    gc.collect()


def timing_groups(rows, group_gib):
    """The floor with all light configurations, then the floor with each heavy one alone."""
    floor, rest = rows[0], rows[1:]
    light = [r for r in rest if r["peak_gib"] <= group_gib]
    heavy = [r for r in rest if r["peak_gib"] > group_gib]
    return [[floor, *light]] + [[dict(floor), r] for r in heavy]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", default="28x28x1,32x32x3", help="comma-separated HxWxC")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--routings", default=",".join(ROUTINGS), help=f"from: {', '.join(ROUTINGS)}")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=2, help="timed steps per configuration per round")
    parser.add_argument("--memory-cap-gib", type=float, default=16.0)
    parser.add_argument("--group-gib", type=float, default=4.0,
                        help="configurations with a larger peak are timed in their own group")
    parser.add_argument("--tiny", action="store_true", help="tiny widths (smoke test)")
    parser.add_argument("--json", default="bench-results/bench.json")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child_main(json.loads(args.child))

    models = [m for m in args.models.split(",") if m]
    routings = [r.strip() for r in args.routings.split(",") if r.strip()]
    for name in models:
        if name not in MODELS:
            parser.error(f"unknown model {name!r}; choose from {', '.join(MODELS)}")
    for name in routings:
        if name not in ROUTINGS:
            parser.error(f"unknown routing {name!r}; choose from {', '.join(ROUTINGS)}")

    import keras
    import tensorflow as tf

    results = {
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count(),
                    "python": platform.python_version(), "tensorflow": tf.__version__, "keras": keras.__version__,
                    "backend": keras.backend.backend()},
        "batch": args.batch, "rounds": args.rounds, "steps": args.steps, "tiny": args.tiny,
        "memory_cap_gib": args.memory_cap_gib, "rows": [],
    }
    for shape_text in args.shapes.split(","):
        shape = parse_shape(shape_text)
        print(f"== {shape_text}: memory", file=sys.stderr, flush=True)
        timed = []
        for model_name, routing in configurations(models, routings):
            spec = {"model": model_name, "routing": routing, "shape": shape, "batch": args.batch, "tiny": args.tiny}
            memory = fit_memory(spec, args.memory_cap_gib)
            row = {"shape": shape_text, "model": model_name, "routing": routing, "requested_batch": args.batch}
            if memory is None:
                row.update(fits=False, batch=None)
            else:
                row.update(fits=memory["batch"] == args.batch, batch=memory["batch"], peak_gib=memory["peak_gib"],
                           params=memory["params"])
                timed.append(row)
            print(f"  {model_name:9s} {routing:16s} {row}", file=sys.stderr, flush=True)
            results["rows"].append(row)
        if not timed or timed[0]["model"] != BACKBONE:
            print("backbone did not fit: no timing", file=sys.stderr)
            continue
        for group in timing_groups(timed, args.group_gib):
            names = ", ".join(f"{r['model']} {r['routing']}" for r in group[1:])
            print(f"== {shape_text}: timing the floor with {names}", file=sys.stderr, flush=True)
            time_configurations(group, shape, args.rounds, args.steps, args.tiny)
        save_json(results, args.json)  # after every shape: a crash later loses nothing measured
    save_json(results, args.json)
    print(markdown_table(results))
    print(f"\nJSON: {args.json}")


def markdown_table(results):
    lines = [
        f"batch {results['batch']}, {results['rounds']} interleaved rounds x {results['steps']} steps, "
        f"{results['machine']['cpus']} CPUs, TF {results['machine']['tensorflow']}, "
        f"Keras {results['machine']['keras']} ({results['machine']['backend']})",
        "",
        "| input | model | routing | params | step (s) | images/s | × floor | peak RSS (GiB) |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for row in results["rows"]:
        if row["batch"] is None:
            lines.append(f"| {row['shape']} | {row['model']} | {row['routing']} | | | | | "
                         f"> {results['memory_cap_gib']:g} even at batch 1 |")
            continue
        note = "" if row["fits"] else f" (batch {row['batch']}: {row['requested_batch']} > "\
                                       f"{results['memory_cap_gib']:g} GiB)"
        lines.append(
            f"| {row['shape']} | {row['model']} | {row['routing']} | {row['params']:,} | "
            f"{row.get('step_s', float('nan')):.3f} | {row.get('images_per_s', float('nan')):.0f} | "
            f"{row.get('ratio_to_floor', float('nan')):.2f} | {row['peak_gib']:.2f}{note} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
