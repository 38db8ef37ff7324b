"""The model zoo: named, versioned, hash-checked trained models.

A zoo entry is ``zoo_configs/NAME.toml`` (model + data + training recipe). A trained entry also
has ``saved_models/NAME/`` with ``model.weights.h5`` and ``card.json``, which
:func:`publish` writes from a finished run folder, never by hand. The card records what was
measured: test accuracy and loss from :func:`capszoo.training.evaluate` on the stated data,
epochs, wall time, hardware, backend, versions, the config hash and the weights' sha256.

Cards and weights are looked for in ``$CAPSZOO_WEIGHTS_DIR/NAME/``, then in ``saved_models/NAME/``
of a source checkout or, installed from a wheel, in the bundled copy: every card, but the weights
of ``ara-digits`` only (the offline demo's), so that the others are a download, not part of every
install. An entry's weights are taken from its card's folder, else from the other folders (a
weights file alone in ``$CAPSZOO_WEIGHTS_DIR/NAME/``), else from the card's ``url``, fetched with
``keras.utils.get_file`` into the Keras cache. Every file is checked against the card's sha256
before it is loaded.
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import os
import re
import sys
from itertools import groupby
from pathlib import Path

from capszoo.config import entry_spelling, load_config, zoo_entry_config, zoo_entry_file, zoo_names
from capszoo.data import sha256_file
from capszoo.routing.base import routing_parameters
from capszoo.runs import (
    RUN_ACCOUNT,
    check_weights_dtype,
    load_weights_checked,
    read_json_object,
    resume_command,
    save_weights,
    training_runs,
)

ENV_WEIGHTS_DIR = "CAPSZOO_WEIGHTS_DIR"
WEIGHTS_FILE = "model.weights.h5"
CARD_FILE = "card.json"
FETCH_CACHE_DIR = None  # keras.utils.get_file's cache_dir for fetched weights: None is the Keras cache
URL_SCHEMES = ("http://", "https://", "file://")


def source_saved_models():
    """``saved_models/`` of a source checkout, or None when running from an installed wheel."""
    folder = Path(__file__).resolve().parent.parent / "saved_models"
    return folder if folder.is_dir() else None


def bundled_saved_models():
    """The ``saved_models`` package an installed wheel holds (every card, the demo's weights)."""
    return Path(__file__).resolve().parent / "saved_models"


def _user_weights_dir():
    """``$CAPSZOO_WEIGHTS_DIR`` as a path, or None when it is unset or empty."""
    return Path(os.environ[ENV_WEIGHTS_DIR]).expanduser() if os.environ.get(ENV_WEIGHTS_DIR) else None


def _entry_dirs(name):
    """Where an entry's card and weights may be: $CAPSZOO_WEIGHTS_DIR, then a source checkout's
    saved_models/ or else the copy inside an installed wheel (every card, the demo's weights)."""
    user = _user_weights_dir()
    return ([user / name] if user else []) + [(source_saved_models() or bundled_saved_models()) / name]


# What loading, listing and the CLI read from every card; publish() always writes them.
CARD_KEYS = ("config_sha256", "weights_sha256", "test_accuracy")


def read_card(name):
    """The model card of a zoo entry as a dict, or None if the entry is not trained.

    A card that is not a JSON object with :data:`CARD_KEYS` (truncated, hand-edited, left with
    merge-conflict markers) raises one ``ValueError`` naming the file, not a JSON traceback.
    """
    for folder in _entry_dirs(name):
        path = folder / CARD_FILE
        if path.is_file():
            card = _parse_card(path, name)
            card["_folder"] = str(folder)
            return card
    return None


def untrained(name, alternative=""):
    """The error for a zoo entry with no published weights: how to train it, then ``alternative``."""
    return ValueError(f"zoo entry {name!r} is not trained yet: train it with `capszoo train {name}`{alternative}")


def card(name):
    """The model card of a trained zoo entry as a dict, as ``capszoo card NAME`` prints it
    (measured test accuracy, training hardware and time, dataset and weights sha256...). An
    unknown name (with close matches) and an entry not trained yet each raise ``ValueError``."""
    zoo_entry_config(name)  # a file or run folder is not an entry: the error with close matches
    found = read_card(name)
    if found is None:
        raise untrained(name)
    return {key: value for key, value in found.items() if not key.startswith("_")}


def _parse_card(path, name):
    where = f"the model card {path} of {name!r}"
    remedy = "restore it (a source checkout: `git checkout -- saved_models`) or publish the entry again"
    card = read_json_object(path, where, remedy)
    missing = [key for key in CARD_KEYS if key not in card]
    if missing:
        raise ValueError(f"{where} lacks {', '.join(missing)}, so it was not written by publish: {remedy}")
    return card


def _machine(run):
    """"2 × AMD EPYC", or "NVIDIA H100 80GB HBM3 (JAX)": where a training run ran."""
    hardware = run["hardware"]
    if hardware.get("accelerators"):
        return f"{', '.join(hardware['accelerators'])} ({run['versions']['backend'].replace('jax', 'JAX')})"
    return f"{hardware['cpu_count']} × {hardware['cpu'].replace('(R)', '').replace('(TM)', '')}"


def trained_how(card):
    """How an entry was trained, e.g. "30 epochs, 2 × AMD EPYC" or "49 of 150 epochs, NVIDIA H100
    80GB HBM3 (JAX)", with the training precision when it was not float32 (", mixed_bfloat16") and
    the momentum of the weights' moving average when its last run kept one (", weights averaged
    (EMA 0.999)"); a run resumed on other hardware names each machine in turn ("... then ...")."""
    planned = card.get("epochs_planned", card["epochs"])
    epochs = f"{card['epochs']} of {planned} epochs" if planned != card["epochs"] else f"{card['epochs']} epochs"
    machines = (_machine(run) for run in card.get("training_runs") or [card])
    where = " then ".join(machine for machine, _ in groupby(machines))  # in turn, repeats merged
    precision = card.get("training_precision", "float32")
    averaged = card.get("training_ema_momentum")
    return (f"{epochs}, {where}" + (f", {precision}" if precision != "float32" else "")
            + (f", weights averaged (EMA {averaged:g})" if averaged else ""))


def _check_flags(function, **flags):
    for flag, value in flags.items():
        if not isinstance(value, bool):
            raise TypeError(f"{function}: {flag} must be True or False, got {value!r}")


def list_models(pattern="*", trained_only=False, as_frame=False):
    """Zoo entry names matching a shell ``pattern`` (``"ara*"``; case and ``_`` for ``-`` do not
    matter), or a pandas DataFrame with their dataset, depth, routing, λ, iterations, params,
    trained flag and measured test accuracy."""
    if not isinstance(pattern, str):
        raise TypeError(f"capszoo.list_models: pattern must be a shell pattern such as 'ara*', got {pattern!r}")
    _check_flags("capszoo.list_models", trained_only=trained_only, as_frame=as_frame)
    names = [n for n in zoo_names() if fnmatch.fnmatchcase(n, entry_spelling(pattern))]
    cards = {n: read_card(n) for n in names}
    if trained_only:
        names = [n for n in names if cards[n] is not None]
    if not as_frame:
        return names
    import pandas as pd

    rows = []
    for name in names:
        config, card = zoo_entry_config(name), cards[name]
        model = config.model
        takes = routing_parameters(model.routing)
        rows.append({
            "name": name,
            "dataset": config.data.dataset,
            "depth": model.depth,
            "routing": model.routing,
            "lam": model.lam if "lam" in takes else None,
            "iterations": model.iterations if "iterations" in takes else None,
            "params": model.param_count(),
            "trained": card is not None,
            "test_accuracy": card["test_accuracy"] if card else None,
        })
    return pd.DataFrame(rows, columns=["name", "dataset", "depth", "routing", "lam", "iterations", "params",
                                       "trained", "test_accuracy"])


def _zoo_weights(name, card):
    """A verified local path to the entry's weights: beside its card, else in another of its
    folders, else downloaded from the card's url."""
    expected = card["weights_sha256"]
    own = Path(card["_folder"])
    candidates = [own / WEIGHTS_FILE] + [folder / WEIGHTS_FILE for folder in _entry_dirs(name) if folder != own]
    path = next((candidate for candidate in candidates if candidate.is_file()), None)
    if path is None and card.get("url"):
        path = Path(_fetch(card["url"], f"{name}-{expected[:12]}.weights.h5"))
    elif path is None:
        user = _user_weights_dir()
        unusable = (f"; ${ENV_WEIGHTS_DIR} is set to {user}, which is not a folder"
                    if user is not None and not user.is_dir() else "")
        raise ValueError(
            f"zoo entry {name!r} is trained ({card['test_accuracy']:.2%} test accuracy on its card) but its weights "
            f"are not on this machine (looked for {', '.join(map(str, candidates))}{unusable}) and its card has no "
            f"url: a pip-installed capszoo holds only the demo's weights. Put {WEIGHTS_FILE} "
            f"(sha256 {expected[:16]}...), from saved_models/{name}/ of the capszoo repository, in "
            f"${ENV_WEIGHTS_DIR}/{name}/, or pass weights=PATH_OR_URL")
    actual = sha256_file(path)
    if actual != expected:
        raise ValueError(f"weights {path} do not match the card of {name!r}: sha256 {actual[:16]}... "
                         f"!= {expected[:16]}... (corrupt or replaced file); delete it and fetch it again")
    return path


def _fetch(url, fname):
    """Keras' get_file into its cache; its "Downloading data from" line and progress bar go to
    stderr, so that what a command prints on stdout (`capszoo eval`'s JSON) stays its own."""
    import keras

    try:
        with contextlib.redirect_stdout(sys.stderr):
            return keras.utils.get_file(fname=fname, origin=url, cache_dir=FETCH_CACHE_DIR, cache_subdir="capszoo")
    except Exception as err:
        raise ValueError(f"cannot fetch weights from {url}: {type(err).__name__}: {err}") from None


def _fetch_url_weights(url):
    """A local copy of the weights at a URL the caller gave, fetched once per URL. The cached name
    is made from the whole URL: under the file name alone (``.../model.weights.h5``), a second
    URL ending in the same name silently got the first one's weights from the cache."""
    import hashlib
    from urllib.parse import urlsplit

    name = Path(urlsplit(url).path).name or WEIGHTS_FILE
    return _fetch(url, f"{hashlib.sha256(url.encode()).hexdigest()[:16]}-{name}")


def _check_pin(sha256, weights):
    """``sha256`` as lower-case hex, or one error saying what a pin must be."""
    if sha256 is None:
        return None
    if not isinstance(sha256, str):
        raise TypeError(f"capszoo.load: sha256 must be a string of hex digits, got {sha256!r}")
    if not re.fullmatch(r"[0-9a-fA-F]{8,64}", sha256):
        raise ValueError(f"capszoo.load: sha256 must be the weights' SHA-256 in hex, or its first 8 or more "
                         f"digits (a card's weights_sha256), got {sha256!r}")
    if weights is None:
        raise ValueError("capszoo.load: sha256 pins the weights to load, and weights=None loads none")
    return sha256.lower()


def _check_pinned(name, weights, path, card_sha256, pin):
    """Refuse weights whose sha256 does not begin with ``pin``, saying where they came from."""
    if card_sha256 is not None:  # the file was checked against the card already
        if not card_sha256.startswith(pin):
            raise ValueError(f"zoo entry {name!r} now has weights {card_sha256[:16]}... (its card), not the "
                             f"{pin[:16]}... pinned by sha256=: it has been published again since (or the pin is "
                             "mistyped); drop sha256 to load the new weights, or load the pinned file with "
                             "weights=PATH")
        return
    if not Path(path).is_file():
        return  # load_weights_checked names the missing file
    actual = sha256_file(path)
    if not actual.startswith(pin):
        cached = (f" (the copy of {weights} in the Keras cache: delete it to fetch the URL again)"
                  if str(weights).startswith(URL_SCHEMES) else "")
        raise ValueError(f"weights {path}{cached} have sha256 {actual[:16]}..., not the {pin[:16]}... pinned by "
                         "sha256=")


def load(name, weights="zoo", compile=True, sha256=None):
    """A zoo model, ready to use: ``capszoo.load("ara-digits")``.

    Args:
        name: a zoo entry (see :func:`list_models`).
        weights: ``"zoo"`` (the entry's published weights, sha256-checked against its card),
            ``None`` (freshly initialised: for training from scratch), or a path or URL
            (http, https, file) of a ``.weights.h5`` file for this architecture. A URL is fetched
            once into the Keras cache and reused from there: publish new weights under a new URL.
        compile: compile with the entry's training recipe (margin loss, Adam), for fine-tuning
            and ``evaluate``.
        sha256: the weights expected, as a SHA-256 in hex or its first 8 or more digits (a card's
            ``weights_sha256``). Pins a result: weights that differ (an entry published again
            since, another file at a path or URL) are refused rather than loaded.

    The model keeps its entry's name as ``model.zoo_entry`` (not saved with it), so
    ``capszoo.class_names(model)``, ``capszoo.training.evaluate(model)`` and
    ``capszoo.export.export_saved_model(model, ...)`` know its dataset without being told.
    """
    from capszoo.training import build_model, compile_model

    if not isinstance(name, str):
        raise TypeError(f"capszoo.load: name must be a zoo entry name such as 'ara-digits', got {name!r}")
    if weights is not None and not isinstance(weights, (str, os.PathLike)):
        raise TypeError(f"capszoo.load: weights must be 'zoo', None, or a path or URL of a .weights.h5 file, "
                        f"got {weights!r}")
    _check_flags("capszoo.load", compile=compile)
    pin = _check_pin(sha256, weights)
    if Path(name).suffix == ".toml":
        raise ValueError("capszoo.load takes a zoo entry name; for a config file use capszoo.training.build_model")
    if zoo_entry_file(name) is None and (Path(name) / "config.toml").is_file():
        raise ValueError(f"capszoo.load takes a zoo entry name, and {name} is a run folder: "
                         f"capszoo.runs.load_trained({name!r}) returns its (model, config)")
    config = zoo_entry_config(name)  # a folder of that name in the current folder is not the entry
    model = build_model(config, compile=False)  # weights first, then compile: no optimizer-state warnings
    model.zoo_entry = config.name  # what class_names(model), evaluate(model) and export read
    if weights is None:
        return compile_model(model, config) if compile else model
    if weights == "zoo":
        card = read_card(name)
        if card is None:
            raise untrained(name, " (or pass weights=None for an untrained model)")
        if card.get("config_sha256") != config.sha256():
            raise ValueError(f"the card of {name!r} was made for another version of its config "
                             f"(config sha256 {card.get('config_sha256', '?')[:12]}... != {config.sha256()[:12]}...)")
        path = _zoo_weights(name, card)
    elif str(weights).startswith(URL_SCHEMES):
        path = _fetch_url_weights(str(weights))
    else:
        path = weights
    if pin is not None:
        _check_pinned(name, weights, path, card["weights_sha256"] if weights == "zoo" else None, pin)
    load_weights_checked(model, path)
    if weights != "zoo":
        warn_if_another_entrys(name, weights, path)
    return compile_model(model, config) if compile else model


class ZooWarning(UserWarning):
    """Something about the weights a zoo model got that is allowed but likely a mistake (the
    ``capszoo`` command prints it as one line)."""


def warn_if_another_entrys(name, given, path):
    """Warn when the weights given for ``name`` are another entry's published ones: entries of
    one architecture (ara-, dra- and uniform-digits, say) load each other's files without an
    error, and the model then routes with weights trained for another routing. A deliberate warm
    start across routings stays possible; a wrong file no longer goes unnoticed."""
    import warnings

    digest = sha256_file(path)
    for other in zoo_names():
        if other == name:
            continue
        try:
            card = read_card(other)
        except ValueError:  # a damaged card is that entry's problem, reported where it is read
            continue
        if card is not None and card["weights_sha256"] == digest:
            warnings.warn(f"the weights given for {name!r} ({given}) are the published weights of {other!r}, "
                          f"trained with its routing and recipe (that model loads by its own name, {other!r})",
                          ZooWarning, stacklevel=3)
            return


def _training_time(runs, metrics):
    """The card's account of training time: all runs behind the weights (a run and the ones it
    resumed), their total wall time and throughput, and the epochs that total covers when a run
    killed before it wrote metrics left a gap."""
    parts = [{"epochs": [int(m.get("resumed_from_epoch", 0)), int(m["epochs"])], **{k: m.get(k) for k in RUN_ACCOUNT}}
             for m in runs]
    wall = sum(part["wall_time_s"] for part in parts)
    covered = sum(last - first for first, last in (part["epochs"] for part in parts))
    account = {"wall_time_s": round(wall, 1),
               "images_per_s": round(covered * metrics["train_examples"] / wall, 1) if covered and wall > 0 else None,
               "training_runs": parts}
    if covered != metrics["epochs"]:
        account["wall_time_epochs"] = covered
    return account


def _card_dataset(source, dataset):
    """The card's account of the training data: what identifies it, not where it lay on the training
    machine. An offline file is named by its file name and sha256; its folder is dropped."""
    card = {}
    for key, value in source.items():
        if key == "path":
            card["file"] = Path(value).name
        else:
            card[key] = value
    if card.get("name") != dataset:
        card["loader"] = card.get("name")
        card["name"] = dataset
    return card


FLOAT16_TOLERANCE_POINTS = 0.05  # the most float16 storage may move test accuracy (the zoo issue's bar)


def _publish_folder(name):
    """Where :func:`publish` puts an entry by default: ``saved_models/NAME/`` of a source checkout;
    installed from a wheel, ``$CAPSZOO_WEIGHTS_DIR/NAME/``, where :func:`load` looks first. (A
    ``./saved_models`` there would never be read: the installed package's cards would win.)"""
    folder = source_saved_models() or _user_weights_dir()
    if folder is not None:
        return folder / name
    raise ValueError(f"this capszoo is installed, not a source checkout: set ${ENV_WEIGHTS_DIR} to the folder "
                     f"capszoo.load should read {name!r} from (publish writes {name}/ there), or pass --dest")


def publish(run_dir, name=None, dest=None, weights_dtype="float32"):
    """Copy a finished run's weights into ``saved_models/NAME/`` and write its card.

    The card is built from the run's ``metrics.json`` (epochs, wall time, hardware and versions
    of the training run; a resumed run's wall time adds up all the runs behind it, listed in
    ``training_runs``) plus the weights' sha256 and size. Its test accuracy and loss are
    measured here, on the published (re-saved) weights with :func:`capszoo.training.evaluate`
    in this process's backend: a run trained elsewhere (a GPU with JAX, say) is thereby checked
    where users load it. ``evaluated_on`` says where; ``test_accuracy_at_training`` keeps the
    training run's own figure when the two differ.

    ``weights_dtype="float16"`` stores the weights rounded to float16 (half the file; they load
    as float32). The test accuracy is then measured on both, and publishing is refused, with
    nothing replaced, if rounding moved it by more than 0.05 points; the card keeps the float32
    figure as ``test_accuracy_float32``.
    """
    run_dir = Path(run_dir)
    metrics_path, weights_path = run_dir / "metrics.json", run_dir / WEIGHTS_FILE
    if not run_dir.is_dir():
        raise ValueError(f"run folder {run_dir} does not exist")
    if not metrics_path.is_file() or not weights_path.is_file():
        finish = f": finish it with `{resume_command(run_dir)}`" if (run_dir / "config.toml").is_file() else ""
        raise ValueError(f"{run_dir} is not a finished run (needs metrics.json and {WEIGHTS_FILE}){finish}")
    metrics = read_json_object(metrics_path, str(metrics_path), "training writes it whole, so it was changed since; "
                                                            "train or resume the run again")
    config = load_config(run_dir / "config.toml")
    if name is None and zoo_entry_file(metrics["name"]) is None:
        raise ValueError(f"run {run_dir} trained the config {metrics['name']!r}, which is not a zoo entry: publish "
                         "takes a run of an entry's recipe (zoo_configs/NAME.toml), named with --name NAME when "
                         "its config file is named otherwise")
    name = name or metrics["name"]
    entry = zoo_entry_config(name)
    if entry.sha256() != config.sha256():
        raise ValueError(f"run {run_dir} did not train the recipe of zoo entry {name!r} (config hashes differ; "
                         f"was it trained with --epochs or other overrides?)")
    from capszoo.training import build_model, evaluate, hardware, versions

    check_weights_dtype(weights_dtype)  # before anything is written
    dest = Path(dest) if dest else _publish_folder(name)
    dest.mkdir(parents=True, exist_ok=True)
    # Re-save through an uncompiled model: the same weight values, without optimizer state;
    # under a temporary name until it has been measured.
    model = load_weights_checked(build_model(config, compile=False), weights_path)
    staged = save_weights(model, dest / f"publishing.{WEIGHTS_FILE}", weights_dtype)
    try:
        # Measured on the file users will load, not on the in-memory copy it was saved from.
        test = evaluate(load_weights_checked(build_model(config, compile=False), staged), config)
        reference = evaluate(model, config) if weights_dtype != "float32" else test
        change = 100 * (test["accuracy"] - reference["accuracy"])
        if abs(change) > FLOAT16_TOLERANCE_POINTS:
            raise ValueError(f"{weights_dtype} weights change {name}'s test accuracy by {change:+.2f} points "
                             f"({reference['accuracy']:.4f} -> {test['accuracy']:.4f}), more than the "
                             f"{FLOAT16_TOLERANCE_POINTS} allowed: publish it in float32")
        staged.replace(dest / WEIGHTS_FILE)
    finally:
        staged.unlink(missing_ok=True)
    dataset = _card_dataset(metrics["dataset"], config.data.dataset)
    card = {
        "name": name,
        "description": entry.description,
        "config_sha256": config.sha256(),
        "weights_file": WEIGHTS_FILE,
        "weights_sha256": sha256_file(dest / WEIGHTS_FILE),
        "weights_bytes": (dest / WEIGHTS_FILE).stat().st_size,
        "weights_dtype": weights_dtype,
        "params": model.count_params(),
        "dataset": dataset,
        "test_accuracy": test["accuracy"],
        "test_loss": test["loss"],
        "test_examples": test["examples"],
        "evaluated_on": {"hardware": hardware(), "versions": versions()},
        **{k: metrics[k] for k in ("epochs", "train_examples", "hardware", "versions")},
        **_training_time(training_runs(run_dir), metrics),
        "epochs_planned": metrics.get("epochs_planned", metrics["epochs"]),
        "data_pipeline": metrics.get("data_pipeline", "tf"),
        "training_precision": metrics.get("precision", "float32"),
        "stopped_by_time_limit": metrics.get("stopped_by_time_limit", False),
        "resumed_from_epoch": metrics.get("resumed_from_epoch", 0),
    }
    if metrics.get("test_accuracy") not in (None, reference["accuracy"]):  # None: trained with --no-test
        card["test_accuracy_at_training"] = metrics["test_accuracy"]
    if weights_dtype != "float32":
        card["test_accuracy_float32"] = reference["accuracy"]
    if config.training.ema_momentum:  # the weights are the moving average the recipe's last run kept
        card["training_ema_momentum"] = config.training.ema_momentum
    if metrics.get("warm_starts"):  # continued from published weights: where Adam started afresh
        card["warm_starts"] = metrics["warm_starts"]
    (dest / CARD_FILE).write_text(json.dumps(card, indent=2) + "\n")
    return dest
