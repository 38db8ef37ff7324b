"""Reproduce the papers' experiments at a budget, print pandas tables beside the papers' numbers,
and write docs/results.md with the tables and figures.

    CAPSZOO_DATA_DIR=../shared/datasets PYTHONPATH=. .venv/bin/python tools/reproduce.py \\
        --experiments energy distribution gradients grid --grid-dataset fashion_mnist \\
        --epochs 2 --subset 2500 --lams 0.0001 0.001 0.1 1 2 3 4 --depths 2 3

Experiments (each optional):
- ``table1``: DRA vs ARA CapsNet2 (zoo entries ``dra-*``/``ara-*``) trained for ``--epochs`` on
  the first ``--subset`` training images of every dataset available here; test accuracy on the
  full test split, beside the paper's Table 1.
- ``grid``: Tables 2-4 (capsule layers x λ, λ-routing) on ``--grid-dataset`` as a keras-tuner
  grid search (validation accuracy; resumable: an existing search in ``--tuning-dir`` is reused).
  Table 4's collapse (validation accuracy under twice chance) is read off the same grid, with
  its cause per cell from each trial's network (``capszoo.analysis.diagnose``): class capsules
  without length (small-λ starvation) or first-convolution ReLUs dead.
- ``gradients``: first-convolution gradients of CapsNet2/3/4 x DRA/ARA on one real batch.
- ``activity``: the first convolution's ReLU activity and class-capsule lengths of the trained
  runs given with ``--activity-runs``, freshly initialised and trained.
- ``energy``, ``distribution``: the objective-function paper's Fig. 1 (random predictions, and a
  trained model's class-capsule layer with ``--energy-model``) and Fig. 2.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DATASETS = ("mnist", "fashion_mnist", "cifar10", "svhn_cropped")
ZOO_NAME = {"mnist": "mnist", "fashion_mnist": "fashion-mnist", "cifar10": "cifar10", "svhn_cropped": "svhn"}
# The adaptive-routing paper's Table 1 (test accuracy %, 2 capsule layers), from DESIGN.md.
PAPER_TABLE1 = {"cifar10": (76.05, 78.41), "svhn_cropped": (93.65, 94.27), "fashion_mnist": (93.02, 93.07),
                "mnist": (99.65, 99.65)}
CAVEAT = {"cifar10": "CIFAR-10 here is a JPEG re-encoding of the original (lossy)."}


def available(dataset, data_dir):
    from capszoo.config import DataConfig
    from capszoo.data import DataUnavailableError, load_arrays

    if dataset == "digits":  # bundled with scikit-learn
        return True
    try:
        load_arrays(DataConfig(dataset=dataset, source="npz", data_dir=data_dir or ""))
        return True
    except DataUnavailableError:
        return False


def run_metrics(run):
    """A run folder's ``metrics.json`` (what training measured), or ``{}`` before it finished."""
    import json

    path = Path(run) / "metrics.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def finished_run(run, config):
    """The metrics of a run folder that already trained ``config`` to the end, else None: a second
    invocation reuses finished runs instead of re-evaluating them."""
    metrics = run_metrics(run)
    done = metrics.get("config_sha256") == config.sha256() and metrics.get("epochs") == config.training.epochs
    return metrics if done else None


def table1(args, datasets):
    import pandas as pd

    from capszoo.config import load_config
    from capszoo.training import train

    rows = []
    for dataset in datasets:
        row = {"dataset": dataset}
        for routing, prefix in (("DRA", "dra"), ("ARA", "ara")):
            config = load_config(f"{prefix}-{ZOO_NAME[dataset]}").with_overrides(epochs=args.epochs,
                                                                                   data_dir=args.data_dir)
            config = config.replace(data={"train_subset": args.subset or 0})
            run = Path(args.runs) / f"table1-{config.name}"
            metrics = finished_run(run, config)
            if metrics is None:
                _, metrics = train(config, out_dir=run, verbose=0, resume=run.is_dir())
            print(f"  {config.name}: test accuracy {metrics['test_accuracy']:.4f} "
                  f"({metrics['epochs']} epochs, {metrics['train_examples']} training images)", flush=True)
            row[f"{routing} here"] = round(100 * metrics["test_accuracy"], 2)
        row["DRA paper"], row["ARA paper"] = PAPER_TABLE1[dataset]
        rows.append(row)
    return pd.DataFrame(rows)


def grid(args):
    """Tables 2-4: the depth x λ grid as a keras-tuner grid search, then every finished trial's
    network looked at on validation images, to say why a cell sits at chance (Table 4)."""
    import pandas as pd

    from capszoo import analysis, tuning
    from capszoo.config import load_config
    from capszoo.data import sample

    if args.grid_config:  # a config with its own [search] table (e.g. one a `capszoo tune` run used)
        base = load_config(args.grid_config).with_overrides(data_dir=args.data_dir)
    else:
        base = load_config(f"ara-{ZOO_NAME[args.grid_dataset]}").with_overrides(data_dir=args.data_dir)
        base = base.replace(name=f"grid-{args.grid_dataset}",
                            search={"lam": [float(x) for x in args.lams], "depth": [int(d) for d in args.depths]})
    points = len(base.search.lam) * len(base.search.depth)
    tuner = tuning.search(base, "grid", max_trials=points, epochs=args.epochs,
                          subset=args.subset, directory=args.tuning_dir,
                          resume=tuning.holds_search(tuning.project_folder(base, args.tuning_dir)),
                          progress=lambda values, metrics: print("  trial", values, round(metrics["val_accuracy"], 4),
                                                                 flush=True))
    frame = tuning.results_frame(tuner)
    frame = frame[frame.status == "COMPLETED"].reset_index(drop=True)
    searched = tuning.tuning_config(base, args.subset)
    images, _ = sample(searched, args.batch * 8, split="validation")
    rows = []
    for row in frame.itertuples():
        model, _ = tuning.load_trial(searched, tuner, row.trial)
        stats = analysis.activity(model, images)
        rows.append({**stats, "diagnosis": analysis.diagnose(row.val_accuracy, stats, base.model.num_classes)})
    frame = frame.join(pd.DataFrame(rows))
    return tuning.pivot(frame, rows="depth", columns="lam"), frame


def gradients(args, figures):
    from capszoo import analysis
    from capszoo.config import load_config
    from capszoo.data import sample

    config = load_config(f"ara-{ZOO_NAME[args.gradient_dataset]}").with_overrides(data_dir=args.data_dir)
    images, labels = sample(config, args.batch)
    frame, grads = analysis.gradients(config, images, labels)
    analysis.plot_gradients(frame, grads, figures / "gradients.png")
    return frame


def energy_and_distribution(args, figures, experiments):
    from capszoo import analysis

    out = {}
    if "energy" in experiments:
        state = analysis.trace_predictions(analysis.random_predictions(16, 64, 10, 8, seed=0), 20)
        frame = analysis.energy(state)
        analysis.plot_energy(frame, figures / "energy-random.png", title="Ψ per iteration, random predictions")
        out["energy (random predictions)"] = frame
        if args.energy_model:
            from capszoo.data import sample
            from capszoo.runs import load_trained

            model, config = load_trained(args.energy_model)
            images, labels = sample(config.with_overrides(data_dir=args.data_dir), args.batch)
            state = analysis.model_trace(model, images, 20)
            frame = analysis.energy(state)
            analysis.plot_energy(frame, figures / "energy-model.png",
                                 title=f"Ψ per iteration, {config.name} class capsules")
            out[f"energy ({config.name})"] = frame
            polar = analysis.polarization(state)
            analysis.plot_couplings(polar, analysis.top_couplings(state, labels), figures / "couplings-model.png",
                                    state["couplings"].shape[-1])
            out[f"couplings ({config.name})"] = polar
    if "distribution" in experiments:
        frame, state = analysis.distribution(64, 3, 20, seed=0)
        analysis.plot_distribution(frame, state, figures / "distribution.png")
        out["distribution: polarization"] = analysis.polarization(state)
    return out


def activity(args):
    """The first convolution's ReLU activity and the class-capsule lengths of trained runs on
    test images, beside the same network freshly initialised (from the run's seed)."""
    import keras
    import pandas as pd

    from capszoo import analysis
    from capszoo.data import sample
    from capszoo.runs import load_trained
    from capszoo.training import build_model

    rows = []
    for run in args.activity_runs:
        model, config = load_trained(run)
        config = config.with_overrides(data_dir=args.data_dir)
        images, _ = sample(config, args.batch * 8)
        keras.utils.set_random_seed(config.training.seed)
        fresh = analysis.activity(build_model(config, compile=False), images)
        trained = analysis.activity(model, images)
        metrics = run_metrics(run)
        rows.append({"run": Path(run).name, "routing": config.model.routing, "depth": config.model.depth,
                     "epochs": metrics.get("epochs"), "train_images": metrics.get("train_examples"),
                     "test_accuracy": metrics.get("test_accuracy"), "relu_active_init": fresh["relu_active"],
                     "relu_active_trained": trained["relu_active"], "length_max_init": fresh["length_max"],
                     "length_mean_trained": trained["length_mean"]})
    return pd.DataFrame(rows)


def fmt(frame):
    """A flat DataFrame as a Markdown table (4 significant digits)."""
    from capszoo.tuning import to_markdown

    return to_markdown(frame, percent=False, index=False)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experiments", nargs="+", default=["energy", "distribution", "gradients", "grid"],
                        choices=["table1", "grid", "gradients", "energy", "distribution", "activity"])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--subset", type=int, default=2500, help="training images per run (0: all)")
    parser.add_argument("--data-dir", default=None, help="offline .npz folder (default $CAPSZOO_DATA_DIR)")
    parser.add_argument("--table1-datasets", nargs="+", choices=DATASETS,
                        help="datasets for table1 (default: every one available here)")
    parser.add_argument("--grid-dataset", default="fashion_mnist", choices=DATASETS)
    parser.add_argument("--lams", nargs="+", type=float, default=[1e-4, 1e-3, 0.1, 1, 2, 3, 4])
    parser.add_argument("--depths", nargs="+", type=int, default=[2, 3])
    parser.add_argument("--grid-config", help="a config with a [search] table over lam and depth (else built "
                        "from ara-DATASET, --lams and --depths)")
    parser.add_argument("--gradient-dataset", default="mnist", choices=DATASETS)
    parser.add_argument("--batch", type=int, default=32, help="images for gradients / energy on a model")
    parser.add_argument("--energy-model", help="a run folder or trained zoo entry for the energy on real images")
    parser.add_argument("--activity-runs", nargs="+", default=[],
                        help="run folders for the activity experiment (first-conv ReLUs, capsule lengths)")
    parser.add_argument("--tuning-dir", default="runs/reproduce-tuning")
    parser.add_argument("--runs", default="runs/reproduce")
    parser.add_argument("--out", default=str(ROOT / "docs"), help="where results.md and figures/ go")
    args = parser.parse_args(argv)

    import os

    args.data_dir = args.data_dir or os.environ.get("CAPSZOO_DATA_DIR")
    out = Path(args.out)
    figures = out / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    have = [d for d in DATASETS if available(d, args.data_dir)]
    missing = [d for d in DATASETS if d not in have]
    sections = [f"# Reproduction at a small budget\n\nGenerated by `tools/reproduce.py {' '.join(sys.argv[1:])}` "
                f"on {time.strftime('%Y-%m-%d')}. Budget: {args.epochs} epoch(s) on the first {args.subset or 'all'} "
                f"training images per run. Datasets available here: {', '.join(have) or 'none'}; "
                f"unavailable: {', '.join(missing) or 'none'}. "
                + " ".join(CAVEAT[d] for d in have if d in CAVEAT)]

    def show(title, frame, text=None):
        print(f"\n== {title}\n{frame.to_string()}")
        sections.append(f"## {title}\n\n{text or fmt(frame)}")

    for name, frame in energy_and_distribution(args, figures, args.experiments).items():
        if name.startswith("energy"):
            verdict = "never increased" if not frame.attrs["ever_increased"] else "INCREASED at some step"
            tag = "model" if "random" not in name else "random"
            show(f"{name}: Ψ {verdict}", frame[["iteration", "total"]],
                 fmt(frame[["iteration", "total"]].iloc[[0, 1, 2, 4, 9, -1]])
                 + f"\n\n![energy](figures/energy-{tag}.png)")
        elif name.startswith("couplings"):
            show(name, frame, fmt(frame.iloc[[0, 1, 2, 4, 9, -1]]) + "\n\n![couplings](figures/couplings-model.png)")
        else:
            show(name, frame, fmt(frame.iloc[[0, 1, 4, 9, -1]]) + "\n\n![distribution](figures/distribution.png)")
    if "gradients" in args.experiments:
        frame = gradients(args, figures)
        show(f"First-convolution gradients, one {args.gradient_dataset} batch of {args.batch}, same initial weights",
             frame, fmt(frame) + "\n\n![gradients](figures/gradients.png)")
    if "grid" in args.experiments:
        from capszoo.tuning import to_markdown

        if args.grid_config:
            from capszoo.config import load_config

            args.grid_dataset = load_config(args.grid_config).data.dataset
        if not available(args.grid_dataset, args.data_dir):
            sections.append(f"## Tables 2-4\n\nNot run: {args.grid_dataset} is not available here.")
        else:
            table, trials = grid(args)
            show(f"Tables 2-3: validation accuracy (%), capsule layers x λ, {args.grid_dataset}", table,
                 to_markdown(table))
            collapse = trials.pivot(index="depth", columns="lam", values="diagnosis")
            show("Table 4: which cells collapsed (validation accuracy below twice chance), and how", collapse,
                 to_markdown(collapse, percent=False)
                 + "\n\n\"no length\": every class capsule shorter than 0.01 (the small-λ starvation); "
                   "\"saturated\": class capsules 0.9 long or more on average (every class lit); "
                   "\"ReLUs dead\": under 1 % of the first convolution's outputs positive.")
            columns = ["trial", "depth", "lam", "val_accuracy", "best_epoch", "seconds", "relu_active",
                       "length_mean", "length_max", "diagnosis"]
            show("Grid trials", trials[columns], fmt(trials[columns]))
    if "table1" in args.experiments:
        chosen = [d for d in (args.table1_datasets or have) if d in have]
        skipped = [d for d in DATASETS if d not in chosen]
        frame = table1(args, chosen)
        note = f"\n\nNot run: {', '.join(skipped)}." if skipped else ""
        show("Table 1: DRA vs ARA test accuracy (%), CapsNet2", frame, fmt(frame) + note)
    if "activity" in args.experiments:
        frame = activity(args)
        show(f"First-convolution activity of trained runs ({args.batch * 8} test images)", frame,
             fmt(frame) + "\n\nrelu_active: share of the first convolution's outputs that are positive; "
             "_init: the same network freshly initialised from the run's seed.")
    (out / "results.md").write_text("\n\n".join(sections) + "\n")
    print(f"\nwrote {out / 'results.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
