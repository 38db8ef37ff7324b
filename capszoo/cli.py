"""The ``capszoo`` command: a thin layer over the Python API."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys


def cmd_demo(args):
    import numpy as np

    from capszoo import zoo
    from capszoo.config import load_config
    from capszoo.data import class_names, load_splits, scale_and_resize_numpy
    from capszoo.training import class_table

    name = "ara-digits"
    config = load_config(name)
    model = zoo.load(name)
    card = zoo.read_card(name)
    splits = load_splits(config)
    x_test = scale_and_resize_numpy(splits.test[0], config.data)
    y_test = splits.test[1]
    scores = np.asarray(model.predict(x_test, verbose=0))
    predicted = scores.argmax(axis=1)
    accuracy = float((predicted == y_test).mean())
    print(f"{name}: {config.description}")
    print(f"weights: {card['_folder']}/model.weights.h5 (sha256 {card['weights_sha256'][:12]}... verified), "
          f"trained {zoo.trained_how(card)}")
    print(f"\ntest accuracy on the {len(y_test)} held-out scikit-learn digits: {accuracy:.4f} "
          f"(card: {card['test_accuracy']:.4f})\n")
    print(class_table(y_test, predicted, class_names(config)).to_string(index=False))
    shown = demo_examples(y_test, predicted, args.images)
    print(f"\n{len(shown)} test images, {demo_caption(y_test, predicted, shown)}: label, prediction, score "
          "(class-capsule length)")
    for k in shown:
        wrong = "   wrong" if predicted[k] != y_test[k] else ""
        print(f"  #{k:<4} {y_test[k]}  ->  {predicted[k]}  {scores[k, predicted[k]]:.3f}{wrong}")
    out = _figure_path(args.out, "capszoo-demo.png")
    _demo_figure(x_test[shown], y_test[shown], scores[shown], out)
    print(f"\nwrote {out}")
    return 0


def demo_examples(labels, predicted, count):
    """Which test images the demo shows, at most ``count``: the first of each class in class
    order, then the misclassified ones (the first in the split), which get the places the
    classes leave and at least half of them. The split's first images were five 6s and two 2s
    in eight, and showed no mistake."""
    import numpy as np

    mistakes = np.flatnonzero(predicted != labels)
    firsts = [int(np.flatnonzero(labels == c)[0]) for c in np.unique(labels)]
    shown_mistakes = min(len(mistakes), max(count - len(firsts), count // 2))
    return np.array(firsts[:count - shown_mistakes] + [int(k) for k in mistakes[:shown_mistakes]], dtype=int)


def demo_caption(labels, predicted, shown):
    """What :func:`demo_examples` chose, in words, for the line above the demo's list."""
    import numpy as np

    classes, mistakes = len(np.unique(labels)), int((predicted != labels).sum())
    wrong = int((predicted[shown] != labels[shown]).sum())
    firsts = len(shown) - wrong
    said = "the first of each class" if firsts == classes else f"the first of {firsts} of the {classes} classes"
    noun = "mistake" + ("s" if mistakes > 1 else "")
    if mistakes == 0:
        return f"{said} (no mistakes)"
    if wrong == 0:
        return f"{said} (none of the {mistakes} {noun})"
    return f"{said}, then " + (f"the {mistakes}" if wrong == mistakes else f"{wrong} of the {mistakes}") + f" {noun}"


def _figure_path(out, default_name):
    """Where a figure given as ``--out`` lands: a folder gets ``default_name`` in it, and a name
    without a suffix ``.png``, as matplotlib would add it (the path printed was then not the file)."""
    from pathlib import Path

    out = Path(out)
    if out.is_dir():
        return out / default_name
    return out if out.suffix else out.with_suffix(".png")


def _count(text):
    """argparse type for counts: an integer >= 1 (argparse names the option in the error)."""
    from capszoo.routing.base import check_count

    try:
        return check_count("a count", int(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}") from None


def _demo_figure(images, labels, scores, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = min(len(images), 6)
    blocks = -(-len(images) // columns)  # an image row and a bar row each
    fig, axes = plt.subplots(2 * blocks, columns, figsize=(1.9 * columns, 4.2 * blocks), squeeze=False)
    for ax in axes[:, len(images) % columns or columns:][-2:].ravel():  # the last block's empty places
        ax.axis("off")
    for k, (image, label, row) in enumerate(zip(images, labels, scores, strict=True)):
        top, bars = axes[2 * (k // columns), k % columns], axes[2 * (k // columns) + 1, k % columns]
        top.imshow(image[..., 0], cmap="gray", vmin=0, vmax=1)
        wrong = row.argmax() != label
        top.set_title(f"label {label}, pred {row.argmax()}" + (" (wrong)" if wrong else ""), fontsize=8,
                      color="tab:red" if wrong else "black")
        top.axis("off")
        # green: the true class; red: a wrong prediction
        colours = ["tab:green" if c == label else "tab:red" if c == row.argmax() else "tab:gray"
                   for c in range(len(row))]
        bars.barh(range(len(row)), row, color=colours)
        bars.set_xlim(0, 1)
        bars.set_yticks(range(len(row)))
        bars.tick_params(labelsize=6)
        bars.set_xlabel("capsule length", fontsize=7)
        if k % columns == 0:
            bars.set_ylabel("class", fontsize=7)
    fig.suptitle("ara-digits: test images and their class-capsule lengths")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def cmd_list(args):
    import pandas as pd

    from capszoo import zoo

    frame = zoo.list_models(args.pattern, trained_only=args.trained, as_frame=True)
    if frame.empty:  # not pandas' "Empty DataFrame" and its column list
        which = "trained zoo entry" if args.trained else "zoo entry"
        print(f"capszoo list: no {which} matches {args.pattern!r} (`capszoo list` shows them all)", file=sys.stderr)
        return 1
    with pd.option_context("display.width", 160, "display.max_rows", None):
        print(frame.to_string(index=False))
    return 0


def cmd_card(args):
    import json

    from capszoo import zoo

    print(json.dumps(zoo.card(args.name), indent=2, ensure_ascii=False))
    return 0


def cmd_publish(args):
    from capszoo import zoo

    print(zoo.publish(args.run, name=args.name, dest=args.dest, weights_dtype=args.weights_dtype))
    return 0


def cmd_train(args):
    import json

    from capszoo.training import run_folder, train

    try:
        _, metrics = train(args.config, out_dir=args.out, epochs=args.epochs, data_dir=args.data_dir,
                           resume=args.resume, distribute=args.distribute, verbose=args.verbose,
                           time_limit=args.time_limit, precision=args.precision, test=args.test,
                           from_zoo=args.from_zoo, from_run=args.from_run)
    except KeyboardInterrupt:
        raise KeyboardInterrupt(f"{run_folder(args.config, args.out)} keeps a checkpoint of each finished epoch: "
                                "the same command with --resume continues from the last") from None
    summary = {k: metrics[k] for k in ("name", "validation_accuracy", "validation_loss", "test_accuracy", "test_loss",
                                       "epochs", "epochs_planned", "wall_time_s", "images_per_s") if k in metrics}
    print(json.dumps(summary))
    return 0


def _trial_line(values, metrics, objective):
    settings = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items()
                         if v is not None)
    return (f"trial: {settings or 'base config'} -> {objective} {metrics.get(objective, float('nan')):.4f} "
            f"(best epoch {metrics['best_epoch']:.0f} of {metrics['epochs']:.0f}, {metrics['seconds']:.0f} s)")


def cmd_tune(args):
    import os

    from capszoo import tuning
    from capszoo.config import load_config

    config = load_config(args.config).with_overrides(data_dir=args.data_dir)
    role = args.distributed
    if role:
        host, _, port = args.oracle.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"--oracle must be HOST:PORT, got {args.oracle!r}")
        tuner_id = "chief" if role == "chief" else (args.tuner_id or f"worker-{os.getpid()}")
        if role == "worker" and "chief" in tuner_id:
            raise ValueError(f"--tuner-id {tuner_id!r}: a worker's id must not contain 'chief'")
        os.environ.update(KERASTUNER_ORACLE_IP=host, KERASTUNER_ORACLE_PORT=port, KERASTUNER_TUNER_ID=tuner_id)
    objective = tuning.logged_objective(config)
    table_axes = _table_axes(args.rows, args.columns, config.search.searched)

    def progress(values, metrics):
        print(_trial_line(values, metrics, objective), flush=True)

    try:
        tuner = tuning.search(config, tuner=args.tuner, max_trials=args.max_trials, epochs=args.epochs,
                              subset=args.subset, directory=args.directory, resume=args.resume,
                              overwrite=args.overwrite, progress=progress, joining=role == "worker")
    except KeyboardInterrupt:
        raise KeyboardInterrupt(f"{tuning.project_folder(config, args.directory)} keeps the finished trials: the "
                                "same command with --resume (not --overwrite) goes on, the interrupted trial again"
                                ) from None
    if role == "worker":
        print(f"worker {os.environ['KERASTUNER_TUNER_ID']}: search finished", flush=True)
    else:
        frame = tuning.results_frame(tuner)
        print(frame.to_string(index=False))
        if table_axes:
            print()
            print(tuning.to_markdown(tuning.pivot(frame, *table_axes)))
        if args.csv:
            frame.to_csv(args.csv, index=False)
        if args.export_best:
            print(f"best trial exported to {tuning.export_best(tuner, args.export_best)}")
    if role:  # keras-tuner's gRPC threads keep a distributed process alive after the search
        sys.stdout.flush()
        os._exit(0)
    return 0


def _table_axes(rows, columns, searched):
    """The summary table's (rows, columns): the papers' depth x λ where the search varies both and
    no axis was named; an axis named with --rows/--columns must be varied by the search, checked
    before any trial runs (the table came out missing, silently, after the whole search)."""
    if rows is None and columns is None:
        return ("depth", "lam") if {"depth", "lam"} <= set(searched) else None
    rows, columns = rows or "depth", columns or "lam"
    if rows == columns:
        raise ValueError(f"--rows and --columns both name {rows!r}: the table needs two hyperparameters")
    for option, name in (("--rows", rows), ("--columns", columns)):
        if name not in searched:
            raise ValueError(f"{option} {name}: the config's [search] does not vary {name!r} "
                             f"(it varies {', '.join(searched) or 'nothing'})")
    return rows, columns


def cmd_analyze(args):
    from pathlib import Path

    from capszoo import analysis
    from capszoo.data import sample

    out = Path(args.out)
    kind = args.analysis
    iterations = args.iterations if args.iterations is not None else 3 if kind == "couplings" else 20
    if kind == "distribution" and args.model:  # it was ignored, the plot then passing for the model's
        raise ValueError(f"analyze distribution takes no MODEL (got {args.model}): it is the papers' 2-D "
                         "experiment on random predictions (--inputs, --outputs, --iterations, --seed)")
    if args.random and kind != "energy":
        raise ValueError(f"--random is for analyze energy, not {kind}")
    if args.random and args.model:
        raise ValueError(f"analyze energy takes MODEL ({args.model}) or --random, not both")
    if kind == "distribution":
        frame, state = analysis.distribution(args.inputs, args.outputs, iterations, args.seed)
        figure = analysis.plot_distribution(frame, state, out / "distribution.png")
        summary = analysis.polarization(state).iloc[[0, -1]]
    elif kind == "gradients":
        from capszoo.config import load_config

        if not args.model:
            raise ValueError("analyze gradients needs MODEL: a config, zoo name or run folder (its data, widths)")
        config = load_config(args.model).with_overrides(data_dir=args.data_dir)
        images, labels = sample(config, args.images)
        print(f"{args.model}: the first convolution's gradient on {_counted(images, args.images, config)}, "
              f"CapsNet depths {', '.join(map(str, args.depths))} x routings {', '.join(args.routings)}, seed "
              f"{args.seed}")
        frame, grads = analysis.gradients(config, images, labels, depths=args.depths, routings=args.routings,
                                          seed=args.seed)
        figure = analysis.plot_gradients(frame, grads, out / "gradients.png")
        summary = frame
    else:
        if kind == "energy" and args.random:
            predictions = analysis.random_predictions(args.images, args.inputs, args.outputs, args.dim, args.seed)
            state = analysis.trace_predictions(predictions, iterations)
            print(f"random predictions: {args.images} example(s), {args.inputs} -> {args.outputs} capsules of "
                  f"dimension {args.dim}, seed {args.seed}; dynamic routing, {_iterations(iterations)}")
        else:
            if not args.model:
                raise ValueError(f"analyze {kind} needs MODEL (a run folder or trained zoo entry)"
                                 + (", or --random" if kind == "energy" else ""))
            from capszoo.runs import load_trained

            model, config = load_trained(args.model, weights=args.weights)
            images, labels = sample(config.with_overrides(data_dir=args.data_dir), args.images)
            state = analysis.model_trace(model, images, iterations, args.layer)
            layers = len(model.capsule_layers)
            n_in, n_out = state["couplings"].shape[2:]
            print(f"{args.model}: dynamic routing traced for {_iterations(iterations)} on capsule layer "
                  f"{args.layer % layers + 1} of {layers} ({n_in} -> {n_out} capsules, trained with "
                  f"{config.model.routing} routing), {_counted(images, args.images, config)}")
        if kind == "energy":
            frame = analysis.energy(state)
            figure = analysis.plot_energy(frame, out / "energy.png")
            summary = frame[["iteration", "total"]]
            print(f"energy ever increased: {frame.attrs['ever_increased']}")
        else:
            frame = analysis.polarization(state)
            largest = analysis.top_couplings(state, labels, args.top)
            figure = analysis.plot_couplings(frame, largest, out / "couplings.png", state["couplings"].shape[-1])
            summary = frame
            mean, most = analysis.prediction_lengths(state)
            print(f"mean |u_hat| {mean:.3g} (largest {most:.3g}): the logit updates u_hat . v scale with it, and "
                  f"the couplings stay near 1/{n_out} while logit_spread stays small")
    frame.to_csv(out / f"{kind}.csv", index=False)
    print(summary.to_string(index=False))
    print(f"wrote {figure} and {out / f'{kind}.csv'}")
    return 0


def _iterations(count):
    return f"{count} iteration" + "s" * (count != 1)


def _counted(images, asked, config):
    """'N test images of DATASET', saying so when the split held fewer than asked for."""
    fewer = f" (all the split holds; {asked} asked for)" if len(images) < asked else ""
    return f"{len(images)} test images of {config.data.dataset}{fewer}"


def cmd_eval(args):
    import json

    from capszoo.runs import load_trained
    from capszoo.training import evaluate

    model, config = load_trained(args.model, weights=args.weights)
    result = evaluate(model, config, data_dir=args.data_dir, split=args.split, per_class=args.per_class)
    table = result.pop("per_class", None)
    print(json.dumps({"model": str(args.model), "dataset": config.data.dataset, **result}))
    if table is not None:
        print()
        print(table.to_string(index=False))
    return 0


def cmd_predict(args):
    import numpy as np

    from capszoo.config import load_config
    from capszoo.data import class_names
    from capszoo.runs import check_background, load_image, load_trained
    from capszoo.training import predict_scores

    config = load_config(args.model)  # the images are checked before the model loads
    paths = _image_paths(args.images)
    images = [load_image(path, config.model.input_shape) for path in paths]
    images = np.stack([check_background(1.0 - image if args.invert else image, path, config.data.dataset,
                                        inverted=args.invert) for path, image in zip(paths, images, strict=True)])
    model, _ = load_trained(args.model, weights=args.weights)  # the same config
    scores = predict_scores(model, images)
    names = class_names(config)
    top = min(args.top, scores.shape[1])
    for path, row in zip(paths, scores, strict=True):
        for k in np.argsort(-row, kind="stable")[:top]:  # best first; ties in class-id order
            print(f"{path}\t{k}\t{names[k]}\t{row[k]:.4f}")
    return 0


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def _image_paths(arguments):
    """The image files ``predict`` was given: a folder stands for its PNG/JPEG files, by name."""
    from pathlib import Path

    paths = []
    for argument in arguments:
        folder = Path(argument)
        if not folder.is_dir():
            paths.append(argument)
            continue
        found = sorted(str(path) for path in folder.iterdir()
                       if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file())
        if not found:
            raise ValueError(f"folder {argument} holds no PNG/JPEG file (*.png, *.jpg, *.jpeg; subfolders "
                             "are not searched)")
        paths.extend(found)
    return paths


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


WEIGHTS_HELP = "a .weights.h5 file, or a .keras model or checkpoint (when MODEL is a config or zoo entry)"


def build_parser():
    import keras

    from capszoo import __version__
    from capszoo.config import SEARCH_DIMENSIONS

    parser = argparse.ArgumentParser(prog="capszoo", description="Capsule networks with interchangeable routing.")
    parser.add_argument("--version", action="version",
                        version=f"capszoo {__version__} (Keras {keras.__version__}, {keras.backend.backend()} backend)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo = commands.add_parser("demo", help="evaluate the bundled ara-digits model and plot examples",
                               description="Load the bundled ara-digits zoo model, evaluate it on the held-out "
                                           "scikit-learn digits, print a per-class table and a few predictions, "
                                           "and write a PNG of examples with their class-capsule lengths.")
    demo.add_argument("--images", type=_count, default=12,
                      help="test images to show at most: the first of each class, then mistakes (default 12)")
    demo.add_argument("--out", default="capszoo-demo.png",
                      help="figure to write, its format from the suffix (default capszoo-demo.png; in a folder, "
                           "FOLDER/capszoo-demo.png)")
    demo.set_defaults(func=cmd_demo)

    listing = commands.add_parser("list", help="list zoo entries", description="List zoo entries as a table.")
    listing.add_argument("pattern", nargs="?", default="*", help="shell pattern, e.g. 'ara*'")
    listing.add_argument("--trained", action="store_true", help="only entries with published weights")
    listing.set_defaults(func=cmd_list)

    card = commands.add_parser("card", help="print a zoo entry's model card", description="Print a model card.")
    card.add_argument("name", metavar="NAME")
    card.set_defaults(func=cmd_card)

    publish = commands.add_parser("publish", help="publish a finished run as a zoo entry's weights and card",
                                  description="Copy a run's final weights to saved_models/NAME/ and write card.json "
                                              "from the run's measured metrics.")
    publish.add_argument("run", metavar="RUN_DIR")
    publish.add_argument("--name", help="zoo entry (default: the run's config name)")
    publish.add_argument("--dest", help="target folder (default saved_models/NAME of a source checkout, "
                         "$CAPSZOO_WEIGHTS_DIR/NAME of an installed capszoo)")
    publish.add_argument("--weights-dtype", choices=["float32", "float16"], default="float32",
                         help="store the weights as float32 (default) or float16: half the file, loaded as float32, "
                              "refused if it moves the test accuracy by more than 0.05 points")
    publish.set_defaults(func=cmd_publish)

    train = commands.add_parser(
        "train", help="train a config or zoo entry", description="Train a model from a TOML config or a zoo entry "
        "name, checkpointing every epoch; writes a run folder with config, history.csv, weights and metrics.json.")
    train.add_argument("config", metavar="CONFIG_OR_NAME", help="a .toml config or a zoo entry (e.g. ara-digits)")
    train.add_argument("--epochs", type=int, help="override training.epochs")
    train.add_argument("--data-dir", help="offline folder of .npz datasets (else $CAPSZOO_DATA_DIR, else tfds)")
    train.add_argument("--out", help="run folder (default runs/NAME)")
    train.add_argument("--resume", action="store_true", help="continue from the run folder's last checkpoint")
    train.add_argument("--from-zoo", action="store_true",
                       help="continue the zoo entry's published weights from the epoch its card ends at, with a "
                            "fresh optimizer (the weights carry none), in a new --out folder; then --resume it")
    train.add_argument("--from-run", metavar="RUN_DIR",
                       help="continue the final weights of a finished run folder with this config's recipe (the "
                            "same model), from the epoch it ended at, with a fresh optimizer, in a new --out folder")
    train.add_argument("--time-limit", type=float, metavar="SECONDS",
                       help="start no epoch that would end past SECONDS of training (judged by the longest epoch so "
                            "far); the run still saves, evaluates and can be --resume'd")
    train.add_argument("--precision", metavar="POLICY",
                       help="override training.precision: float32, or mixed_bfloat16 (the convolutions in "
                            "bfloat16, the capsules in float32; 1.8-1.9x per step measured on a CPU with AVX-512 BF16)")
    train.add_argument("--test", action=argparse.BooleanOptionalAction, default=None,
                       help="evaluate on the test split at the end (default: unless the config holds out validation "
                            "data, whose runs choose between settings and report validation accuracy instead)")
    train.add_argument("--distribute", choices=["mirrored", "multi_worker"],
                       help="tf.distribute strategy (TensorFlow backend)")
    train.add_argument("--verbose", type=int, choices=[0, 1, 2], default=1, help="Keras progress: 0, 1 bar, 2 line")
    train.set_defaults(func=cmd_train)

    tune = commands.add_parser(
        "tune", help="hyperparameter search over the config's [search] space (keras-tuner)",
        description="Search the [search] space of a config (λ, iterations, routing, depth, learning rate) with "
                    "keras-tuner, maximising validation accuracy; prints a line per trial, then the results "
                    "and the depth x λ table.")
    tune.add_argument("config", metavar="CONFIG_OR_NAME", help="a .toml config with a [search] table")
    tune.add_argument("--tuner", choices=["grid", "random", "bayesian", "hyperband"], default="random")
    tune.add_argument("--max-trials", type=_count, default=10, help="trials at most (not hyperband; default 10)")
    tune.add_argument("--epochs", type=_count, default=2,
                      help="epochs per trial (hyperband: the most, at least 2; default 2)")
    tune.add_argument("--subset", type=_count, help="use only the first K training examples")
    tune.add_argument("--directory", default="tuning", help="keras-tuner directory (default tuning/)")
    tune.add_argument("--resume", action="store_true", help="continue the search already in --directory")
    tune.add_argument("--overwrite", action="store_true", help="discard the search already in --directory")
    tune.add_argument("--data-dir", help="offline folder of .npz datasets")
    tune.add_argument("--rows", choices=SEARCH_DIMENSIONS,
                      help="hyperparameter of the summary table's rows (default depth)")
    tune.add_argument("--columns", choices=SEARCH_DIMENSIONS, help="hyperparameter of its columns (default lam)")
    tune.add_argument("--csv", help="write the per-trial results to this CSV file")
    tune.add_argument("--export-best", metavar="DIR",
                      help="write the best trial's config.toml and model.weights.h5 to DIR")
    tune.add_argument("--distributed", choices=["chief", "worker"],
                      help="keras-tuner's distributed mode: the chief runs the oracle, workers run trials")
    tune.add_argument("--oracle", default="127.0.0.1:8000", help="the chief's HOST:PORT (default 127.0.0.1:8000)")
    tune.add_argument("--tuner-id", help="a worker's unique id (default worker-PID)")
    tune.set_defaults(func=cmd_tune)

    analyze = commands.add_parser(
        "analyze", help="routing analysis: energy, distribution, couplings, gradients (PNG + CSV)",
        description="Routing analysis from the papers. energy: Ψ(C) per dynamic-routing iteration on a trained "
                    "model's capsule layer (or random predictions); distribution: the 2-D experiment; couplings: "
                    "polarization of c_ij and the largest couplings into the correct class; gradients: the "
                    "first-convolution gradient of CapsNet2/3/4 with each routing on one real batch. Each writes "
                    "OUT/KIND.png and OUT/KIND.csv.")
    analyze.add_argument("analysis", choices=["energy", "distribution", "couplings", "gradients"], metavar="KIND",
                         help="energy | distribution | couplings | gradients")
    analyze.add_argument("model", metavar="MODEL", nargs="?",
                         help="energy/couplings: a run folder or trained zoo entry; gradients: a config or zoo name")
    analyze.add_argument("--weights", help=WEIGHTS_HELP)
    analyze.add_argument("--out", default="analysis", help="folder for the PNG and CSV (default analysis/)")
    analyze.add_argument("--iterations", type=int, default=None,
                         help="routing iterations (default 20; couplings: 3)")
    analyze.add_argument("--images", type=_count, default=32, help="test images (or random examples) to use")
    analyze.add_argument("--layer", type=int, default=-1, help="capsule layer to trace (default -1: the classes)")
    analyze.add_argument("--random", action="store_true", help="energy on random predictions instead of a model")
    analyze.add_argument("--inputs", type=_count, default=64, help="random predictions: input capsules (default 64)")
    analyze.add_argument("--outputs", type=_count, default=3, help="random predictions: output capsules (default 3)")
    analyze.add_argument("--dim", type=_count, default=8, help="random predictions for energy: dimension (default 8)")
    analyze.add_argument("--top", type=_count, default=50, help="couplings: the largest N per image (default 50)")
    analyze.add_argument("--depths", type=int, nargs="+", default=[2, 3, 4], help="gradients: capsule layers")
    analyze.add_argument("--routings", nargs="+", default=["dynamic", "adaptive_lambda"], help="gradients: routings")
    analyze.add_argument("--seed", type=int, default=0)
    analyze.add_argument("--data-dir", help="offline folder of .npz datasets")
    analyze.set_defaults(func=cmd_analyze)

    model_help = "a run folder (holding config.toml and model.weights.h5), or a config/zoo name with --weights"
    evaluate = commands.add_parser("eval", help="evaluate a trained model on its dataset",
                                   description="Evaluate a trained model on the test (or validation) split.")
    evaluate.add_argument("model", metavar="MODEL", help=model_help)
    evaluate.add_argument("--weights", help=WEIGHTS_HELP)
    evaluate.add_argument("--data-dir", help="offline folder of .npz datasets")
    evaluate.add_argument("--split", choices=["test", "validation"], default="test")
    evaluate.add_argument("--per-class", action="store_true",
                          help="also print each class's accuracy and the class it is most confused with")
    evaluate.set_defaults(func=cmd_eval)

    predict = commands.add_parser("predict", help="classify image files",
                                  description="Classify PNG/JPEG files (or folders of them): prints path, class id, "
                                              "class name, score.")
    predict.add_argument("model", metavar="MODEL", help=model_help)
    predict.add_argument("images", metavar="IMAGE", nargs="+",
                         help="PNG or JPEG files, or folders (their *.png, *.jpg and *.jpeg files, by name)")
    predict.add_argument("--weights", help=WEIGHTS_HELP)
    predict.add_argument("--top", type=_count, default=1,
                         help="the K most likely classes per image, a row each, best first (default 1)")
    predict.add_argument("--invert", action="store_true",
                         help="invert the images' gray levels: dark digits or objects on a light background for a "
                              "model of MNIST, Fashion-MNIST or digits, whose images are light on black (an image "
                              "with a light border is refused without it)")
    predict.set_defaults(func=cmd_predict)

    exporter = commands.add_parser(
        "export", help="export a SavedModel for TF Serving",
        description="Write OUT/NAME/VERSION/{saved_model.pb, variables/, assets/} with the signatures "
                    "serving_default (images) and predict_image_bytes (encoded PNG/JPEG).")
    exporter.add_argument("model", metavar="MODEL", nargs="?", help=model_help)
    exporter.add_argument("--weights", help=WEIGHTS_HELP)
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


@contextlib.contextmanager
def _one_line_warnings(command):
    """capszoo's own warnings (:class:`capszoo.zoo.ZooWarning`) as one line on stderr, like its
    errors, not Python's "FILE:LINE: ZooWarning:" and the source line; others as Python shows them."""
    import warnings

    from capszoo.zoo import ZooWarning

    shown = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, ZooWarning):
            print(f"capszoo {command}: warning: {message}", file=sys.stderr)
        else:
            shown(message, category, filename, lineno, file, line)

    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = shown


def main(argv=None):
    args = build_parser().parse_args(argv)
    from capszoo.training import TrainingError

    try:
        with _one_line_warnings(args.command):
            status = args.func(args)
        sys.stdout.flush()  # here, so that a closed pipe is met inside this try, not at exit
        return status
    except BrokenPipeError:  # `capszoo list | head -1`: the reader has gone; stop quietly, as `ls | head` does
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # the flush at exit must not fail again
        return 141  # 128 + SIGPIPE, the status a shell reports for a writer the pipe stopped
    except KeyboardInterrupt as err:  # Ctrl-C: a line, not Keras' traceback, and the shell's status for it
        print(f"capszoo {args.command}: interrupted" + (f"; {err}" if str(err) else ""), file=sys.stderr)
        return 130
    except (ValueError, TrainingError, OSError) as err:
        message = " ".join((_os_error(err) if isinstance(err, OSError) else str(err)).split())  # one line
        if len(message) > MESSAGE_LIMIT:  # a backend's error can hold whole tensors
            message = f"{message[:MESSAGE_LIMIT]}... ({len(message) - MESSAGE_LIMIT:,} more characters)"
        print(f"capszoo {args.command}: error: {message}", file=sys.stderr)
        return 2


MESSAGE_LIMIT = 1500  # characters; ours are shorter, the longest the list of all 35 entry names


def _os_error(err):
    """A file-system error as the path and what is wrong with it: an output folder that is a file,
    a folder without write permission, a full disk; not Python's "[Errno 17] File exists: 'x'"."""
    import errno

    if err.filename is None:
        return str(err)
    if err.errno == errno.EEXIST:
        return f"{err.filename} is a file where a folder is needed"
    if err.errno == errno.ENOTDIR:
        return f"a part of {err.filename} is a file where a folder is needed"
    return f"{err.filename}: {err.strerror or err}"


if __name__ == "__main__":
    sys.exit(main())
