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


def cmd_train(args):
    import json

    from capszoo.training import train

    _, metrics = train(args.config, out_dir=args.out, epochs=args.epochs, data_dir=args.data_dir, resume=args.resume,
                       distribute=args.distribute, verbose=args.verbose)
    summary = {k: metrics[k] for k in ("name", "test_accuracy", "test_loss", "epochs", "wall_time_s", "images_per_s")}
    print(json.dumps(summary))
    return 0


def cmd_eval(args):
    import json

    from capszoo.runs import load_trained
    from capszoo.training import evaluate

    model, config = load_trained(args.model, weights=args.weights)
    result = evaluate(model, config, data_dir=args.data_dir, split=args.split)
    print(json.dumps({"model": str(args.model), "dataset": config.data.dataset, **result}))
    return 0


def cmd_predict(args):
    from capszoo.data import CLASS_NAMES
    from capszoo.runs import load_image, load_trained
    from capszoo.training import predict_scores

    model, config = load_trained(args.model, weights=args.weights)
    import numpy as np

    images = np.stack([load_image(path, config.model.input_shape) for path in args.images])
    scores = predict_scores(model, images)
    names = CLASS_NAMES[config.data.dataset]
    for path, row in zip(args.images, scores, strict=True):
        k = int(row.argmax())
        print(f"{path}\t{k}\t{names[k]}\t{row[k]:.4f}")
    return 0


def cmd_export(args):
    import json
    from pathlib import Path

    from capszoo import export

    if args.model is None:
        if not args.models_config:
            raise ValueError("give a MODEL to export, or --models-config DIR")
        print(export.write_models_config(args.models_config, base_path=args.base_path))
        return 0
    if not args.out:
        raise ValueError("--out DIR is required to export a model")
    path = export.export_saved_model(args.model, args.out, version=args.version, name=args.name,
                                     overwrite=args.overwrite, weights=args.weights)
    print(path)
    if args.example_request:
        import io

        import numpy as np
        from PIL import Image

        height, width, channels = json.loads((path / "assets" / "capszoo.json").read_text())["model_config"][
            "input_shape"]
        gray = np.full((height, width, channels), 0.5, np.float32)
        png = io.BytesIO()
        Image.fromarray((gray[..., 0] * 255).astype(np.uint8) if channels == 1 else (gray * 255).astype(np.uint8)
                        ).save(png, format="PNG")
        for suffix, body in (("", export.example_request(images=[gray])),
                             ("_b64", export.example_request(image_bytes=[png.getvalue()]))):
            request = Path(path).parent / f"request{suffix}.json"
            request.write_text(json.dumps(body))
            print(request)
    if args.models_config:
        print(export.write_models_config(args.models_config, base_path=args.base_path))
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

    train = commands.add_parser(
        "train", help="train a config or zoo entry", description="Train a model from a TOML config or a zoo entry "
        "name, checkpointing every epoch; writes a run folder with config, history.csv, weights and metrics.json.")
    train.add_argument("config", metavar="CONFIG_OR_NAME", help="a .toml config or a zoo entry (e.g. ara-digits)")
    train.add_argument("--epochs", type=int, help="override training.epochs")
    train.add_argument("--data-dir", help="offline folder of .npz datasets (else $CAPSZOO_DATA_DIR, else tfds)")
    train.add_argument("--out", help="run folder (default runs/NAME)")
    train.add_argument("--resume", action="store_true", help="continue from the run folder's last checkpoint")
    train.add_argument("--distribute", choices=["mirrored", "multi_worker"],
                       help="tf.distribute strategy (TensorFlow backend)")
    train.add_argument("--verbose", type=int, choices=[0, 1, 2], default=1, help="Keras progress: 0, 1 bar, 2 line")
    train.set_defaults(func=cmd_train)

    model_help = "a run folder (holding config.toml and model.weights.h5), or a config/zoo name with --weights"
    evaluate = commands.add_parser("eval", help="evaluate a trained model on its dataset",
                                   description="Evaluate a trained model on the test (or validation) split.")
    evaluate.add_argument("model", metavar="MODEL", help=model_help)
    evaluate.add_argument("--weights", help="a .weights.h5 file (when MODEL is a config)")
    evaluate.add_argument("--data-dir", help="offline folder of .npz datasets")
    evaluate.add_argument("--split", choices=["test", "validation"], default="test")
    evaluate.set_defaults(func=cmd_eval)

    predict = commands.add_parser("predict", help="classify image files",
                                  description="Classify PNG/JPEG files: prints path, class id, class name, score.")
    predict.add_argument("model", metavar="MODEL", help=model_help)
    predict.add_argument("images", metavar="IMAGE", nargs="+", help="PNG or JPEG files")
    predict.add_argument("--weights", help="a .weights.h5 file (when MODEL is a config)")
    predict.set_defaults(func=cmd_predict)

    exporter = commands.add_parser(
        "export", help="export a SavedModel for TF Serving",
        description="Write OUT/NAME/VERSION/{saved_model.pb, variables/, assets/} with the signatures "
                    "serving_default (images) and predict_image_bytes (encoded PNG/JPEG).")
    exporter.add_argument("model", metavar="MODEL", nargs="?", help=model_help)
    exporter.add_argument("--weights", help="a .weights.h5 file (when MODEL is a config)")
    exporter.add_argument("--out", help="the models folder (TF Serving's model base directory)")
    exporter.add_argument("--version", type=int, default=1, help="version folder number (default 1)")
    exporter.add_argument("--name", help="model name (default: the run's config name)")
    exporter.add_argument("--overwrite", action="store_true", help="replace an existing version")
    exporter.add_argument("--example-request", action="store_true",
                          help="also write request.json (instances rows) and request_b64.json beside the versions")
    exporter.add_argument("--models-config", metavar="DIR",
                          help="write DIR/models.config (model_config_list) for every model exported under DIR")
    exporter.add_argument("--base-path", default="/models",
                          help="where DIR is mounted in the serving container (default /models)")
    exporter.set_defaults(func=cmd_export)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    from capszoo.training import TrainingError

    try:
        return args.func(args)
    except (ValueError, TrainingError, FileNotFoundError) as err:
        message = " ".join(str(err).split())  # one line
        print(f"capszoo {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
