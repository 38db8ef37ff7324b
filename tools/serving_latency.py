"""CPU latency of exported SavedModels through their ``serving_default`` signature (or, with
``--signature predict_image_bytes``, through that one, given the same images as JPEG files).

Exports each model (a zoo config's architecture; latency does not depend on the weights' values,
so untrained weights are used unless ``--run`` names a trained run folder), loads it with plain
``tf.saved_model.load`` as TF Serving would, and times the signature at each batch size: a few
warm-up calls, then ``--repeats`` timed calls; reports the median and the 90th percentile.

    PYTHONPATH=. python tools/serving_latency.py --configs ara-mnist,dra-mnist --batches 1,128
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", default="ara-mnist,dra-mnist", help="zoo names or .toml paths")
    parser.add_argument("--run", action="append", default=[], help="a trained run folder (repeatable)")
    parser.add_argument("--batches", default="1,128")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--signature", default="serving_default", choices=["serving_default", "predict_image_bytes"])
    parser.add_argument("--json", default="bench-results/serving_latency.json")
    args = parser.parse_args(argv)

    import numpy as np
    import tensorflow as tf

    from capszoo.config import load_config
    from capszoo.export import export_saved_model
    from capszoo.training import build_model

    sources = [(name, build_model(load_config(name), compile=False)) for name in args.configs.split(",") if name]
    sources += [(Path(run).name, run) for run in args.run]
    batches = [int(b) for b in args.batches.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as base:
        for name, model in sources:
            path = export_saved_model(model, base, name=name)
            loaded = tf.saved_model.load(str(path))
            signature = loaded.signatures[args.signature]
            shape = loaded.signatures["serving_default"].structured_input_signature[1]["images"].shape[1:]
            for batch in batches:
                pixels = np.random.default_rng(0).integers(0, 256, (batch, *shape), dtype=np.uint8)
                inputs = ({"images": tf.constant(pixels / np.float32(255))} if args.signature == "serving_default"
                          else {"image_bytes": tf.stack([tf.io.encode_jpeg(p) for p in pixels])})
                for _ in range(args.warmup):
                    signature(**inputs)["class_scores"].numpy()
                times = []
                for _ in range(args.repeats):
                    start = time.perf_counter()
                    signature(**inputs)["class_scores"].numpy()
                    times.append(time.perf_counter() - start)
                times.sort()
                rows.append({"model": name, "batch": batch, "median_ms": 1000 * statistics.median(times),
                             "p90_ms": 1000 * times[int(0.9 * (len(times) - 1))],
                             "images_per_s": batch / statistics.median(times)})
                print(f"  {name} batch {batch}: {rows[-1]['median_ms']:.1f} ms", file=sys.stderr, flush=True)
    result = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "tensorflow": tf.__version__},
              "signature": args.signature, "repeats": args.repeats, "rows": rows}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=2))
    print(f"{args.signature}: {args.repeats} timed calls after {args.warmup} warm-up calls, {os.cpu_count()} CPUs, "
          f"TF {tf.__version__}\n")
    print("| model | batch | median (ms) | p90 (ms) | images/s |\n|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['model']} | {r['batch']} | {r['median_ms']:.1f} | {r['p90_ms']:.1f} | {r['images_per_s']:.0f} |")


if __name__ == "__main__":
    sys.exit(main())
