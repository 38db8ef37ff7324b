"""The ``capszoo`` command: a thin layer over the Python API."""

from __future__ import annotations

import argparse
import sys

FACTORIES = {2: "CapsNet2", 3: "CapsNet3", 4: "CapsNet4"}


def _digits_images(count, size):
    """The first ``count`` images of scikit-learn's bundled 8x8 digits, resized to ``size``, in [0, 1]."""
    from keras import ops
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.images[:count] / 16.0).astype("float32")[..., None]
    return ops.convert_to_numpy(ops.image.resize(images, (size, size))).clip(0, 1), digits.target[:count]


def cmd_demo(args):
    import numpy as np

    import capszoo

    factory = getattr(capszoo, FACTORIES[args.depth])
    model = factory(routing=args.routing, iterations=args.iterations, lam=args.lam)
    model.summary()
    images, labels = _digits_images(args.images, 28)
    scores = np.asarray(model.predict(images, verbose=0))
    print(f"\nForward pass of the UNTRAINED {FACTORIES[args.depth]} ({args.routing} routing) on "
          f"{len(images)} scikit-learn digits resized to 28x28: class scores = capsule lengths")
    print("label  predicted  " + " ".join(f"{k:>5d}" for k in range(scores.shape[1])))
    for label, row in zip(labels, scores, strict=True):
        print(f"{label:5d}  {int(row.argmax()):9d}  " + " ".join(f"{s:5.3f}" for s in row))
    return 0


def build_parser():
    from capszoo.routing import available_routings

    parser = argparse.ArgumentParser(prog="capszoo", description="Capsule networks with interchangeable routing.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo = commands.add_parser("demo", help="build a CapsNet, print its summary and run a forward pass",
                               description="Build a paper-width CapsNet on 28x28x1, print its summary and "
                                           "run a forward pass on a few of scikit-learn's bundled digits.")
    demo.add_argument("--depth", type=int, choices=sorted(FACTORIES), default=2, help="capsule layers (default 2)")
    demo.add_argument("--routing", choices=available_routings(), default="adaptive_lambda")
    demo.add_argument("--iterations", type=int, default=3, help="routing iterations (iterative routings)")
    demo.add_argument("--lam", type=float, default=3.0, help="gradient coefficient λ (adaptive_lambda)")
    demo.add_argument("--images", type=int, default=5, help="how many digits to run (default 5)")
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ValueError as err:
        print(f"capszoo {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
