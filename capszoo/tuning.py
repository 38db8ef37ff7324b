"""Hyperparameter search with keras-tuner over λ, routing iterations, routing and depth.

The search space is the ``[search]`` table of a config (:class:`capszoo.config.SearchConfig`);
everything it leaves out is fixed by the config's ``[model]``, ``[data]`` and ``[training]``.
Conditional hyperparameters follow the routing: ``lam`` exists only in trials whose routing
takes λ, ``iterations`` only in trials whose routing iterates.

    from capszoo import tuning
    tuner = tuning.search("tune-fashion-mnist", tuner="grid", epochs=2, directory="tuning")
    frame = tuning.results_frame(tuner)              # or results_frame("tuning/NAME")
    print(tuning.to_markdown(tuning.pivot(frame, rows="depth", columns="lam")))

Trials are written in keras-tuner's own layout (``DIRECTORY/PROJECT/trial_NNN/trial.json``,
``oracle.json``, ...). A search started again on the same directory continues where it
stopped: finished trials are kept, an interrupted one runs again.

Distributed search uses keras-tuner's chief/worker mode: set ``KERASTUNER_TUNER_ID`` (``chief``
for the process that runs the oracle, any other unique id for a worker),
``KERASTUNER_ORACLE_IP`` and ``KERASTUNER_ORACLE_PORT``, or use ``capszoo tune --distributed``.
"""

from __future__ import annotations

import functools
import json
import math
import time
import warnings
from pathlib import Path

import keras
import keras_tuner
import numpy as np

from capszoo.config import SEARCH_DIMENSIONS, Config, SearchConfig, load_config
from capszoo.routing.base import check_count, routing_parameters
from capszoo.runs import read_json_object

TUNERS = ("grid", "random", "bayesian", "hyperband")
TUNING_VALIDATION_FRACTION = 0.1  # used when the base config holds out no validation split


def tuning_config(config, subset=None):
    """The base config a search runs from: ``config`` with a validation split (the objective is
    measured on it; the test split is never used) and, if given, only ``subset`` training examples."""
    if subset is not None:  # 0 would be falsy: all the data, silently
        subset = check_count("tuning subset (--subset)", subset)
    config = load_config(config)
    changes = {}
    if config.data.validation_fraction == 0:
        changes["validation_fraction"] = TUNING_VALIDATION_FRACTION
    if subset is not None:
        changes["train_subset"] = subset
    return config.replace(data=changes) if changes else config


# Keras names a metric after its output when a model has several: with the reconstruction
# decoder, the class accuracy is logged as (val_)class_scores_accuracy (training.compile_model).
DECODER_ACCURACY = "val_class_scores_accuracy"


def logged_objective(config) -> str:
    """``search.objective`` under the name Keras logs it for ``config``'s model: the default
    ``val_accuracy`` is ``val_class_scores_accuracy`` for a model with a reconstruction decoder."""
    config = load_config(config)
    if config.model.decoder and config.search.objective == "val_accuracy":
        return DECODER_ACCURACY
    return config.search.objective


def trial_config(base: Config, values: dict) -> Config:
    """``base`` with one trial's hyperparameter ``values`` applied (missing keys keep the base's)."""
    model = base.model
    if values.get("depth") is not None:
        model = model.with_depth(int(values["depth"]), base.search.hidden_capsules, base.search.hidden_dim)
    model = model.replace(**{k: values[k] for k in ("routing", "lam", "iterations") if values.get(k) is not None})
    training = {"learning_rate": values["learning_rate"]} if values.get("learning_rate") is not None else {}
    return base.replace(model=model, training=training)


def _declare(hp, key, spec):
    """One keras-tuner hyperparameter from a search dimension (a tuple of choices or a range)."""
    if isinstance(spec, tuple):
        return hp.Choice(key, list(spec), ordered=not isinstance(spec[0], str))
    kwargs = {"sampling": spec["sampling"]}
    if "step" in spec:
        kwargs["step"] = spec["step"]
    if key in ("iterations", "depth"):
        return hp.Int(key, int(spec["min"]), int(spec["max"]), **kwargs)
    return hp.Float(key, spec["min"], spec["max"], **kwargs)


class CapsNetHyperModel(keras_tuner.HyperModel):
    """A ``keras_tuner.HyperModel`` over a config's ``[search]`` space.

    ``build(hp)`` returns the compiled CapsNet of the trial's config, initialised from the
    config's ``training.seed`` afresh in every trial: trials of equal depth start from the same
    weights, so a grid compares hyperparameters and not initialisations (at small budgets the
    initialisation alone can decide whether the first convolution's ReLUs die), and a resumed or
    distributed trial starts where an uninterrupted one would. ``fit`` trains it with the
    papers' per-epoch learning-rate decay and returns the best epoch's logged metrics plus
    ``epochs`` run, ``best_epoch`` and ``seconds``, which keras-tuner records with the trial.
    ``progress(values, metrics)``, if given, is called after each trial this process runs.
    """

    def __init__(self, config, progress=None, **kwargs):
        self.base = load_config(config)
        super().__init__(name=self.base.name, **kwargs)
        self.progress = progress

    def values(self, hp):
        """Declare the search's hyperparameters on ``hp`` and return this trial's values
        (``None`` for a conditional one that does not apply to the trial's routing)."""
        search, base = self.base.search, self.base
        values = {}
        if search.routing is not None:
            values["routing"] = _declare(hp, "routing", search.routing)
        routings = search.routing or (base.model.routing,)
        for key in ("lam", "iterations"):
            if getattr(search, key) is None:
                continue
            takers = [r for r in routings if key in routing_parameters(r)]
            if len(takers) < len(routings):  # only when routing itself is searched (config checks)
                with hp.conditional_scope("routing", takers):
                    values[key] = _declare(hp, key, getattr(search, key))
            else:
                values[key] = _declare(hp, key, getattr(search, key))
        for key in ("depth", "learning_rate"):
            if getattr(search, key) is not None:
                values[key] = _declare(hp, key, getattr(search, key))
        return values

    def build(self, hp):
        from capszoo.training import build_model

        config = trial_config(self.base, self.values(hp))
        keras.utils.set_random_seed(config.training.seed)
        return build_model(config, precision=config.training.precision)

    def fit(self, hp, model, *args, callbacks=None, **kwargs):
        from capszoo.training import NanGuard, lr_schedule

        values = self.values(hp)
        start = time.perf_counter()
        history = model.fit(*args, callbacks=[lr_schedule(trial_config(self.base, values)), NanGuard(),
                                              *(callbacks or [])], **kwargs)
        result = best_epoch_metrics(history.history, logged_objective(self.base))
        result.update(epochs=float(len(history.epoch)), seconds=time.perf_counter() - start)
        if self.progress:
            self.progress(values, result)
        return result


class _ResumableGridSearchOracle(keras_tuner.oracles.GridSearchOracle):
    """keras-tuner's grid oracle, able to continue a search reloaded from disk.

    keras-tuner 1.4's ``GridSearchOracle`` keeps the order of the grid points it has tried (and
    the queue of points to extend) only in memory, so a reloaded grid search fails with a
    ``KeyError`` on its first new trial. Both are rebuilt here from the reloaded trials: sorted in
    the oracle's own order, and all queued, so each one's successor is tried unless it already was.
    """

    def populate_space(self, trial_id):
        if self.start_order and not self._ordered_ids._memory:
            ordered = sorted(self.start_order, key=functools.cmp_to_key(
                lambda a, b: self._compare(self.trials[a].hyperparameters.values,
                                           self.trials[b].hyperparameters.values)))
            for tried in ordered:
                self._ordered_ids.insert(tried)
            self._populate_next = list(ordered)
        return super().populate_space(trial_id)


class GridSearch(keras_tuner.Tuner):
    """Grid search over every combination of the search space; resumable (see the oracle)."""

    def __init__(self, hypermodel, objective, max_trials=None, seed=None, **kwargs):
        oracle = _ResumableGridSearchOracle(objective=objective, max_trials=max_trials, seed=seed)
        super().__init__(oracle, hypermodel, **kwargs)


def best_epoch_metrics(history: dict, objective: str) -> dict:
    """The logged metrics of the epoch with the highest ``objective`` (NaN epochs never win)."""
    if objective not in history:
        raise ValueError(f"search.objective {objective!r} was not logged; logged: {', '.join(sorted(history))}")
    scores = np.asarray(history[objective], dtype=float)
    if np.all(np.isnan(scores)):
        best = len(scores) - 1
    else:
        best = int(np.nanargmax(scores))
    result = {k: float(v[best]) for k, v in history.items() if len(v) > best}
    result["best_epoch"] = float(best + 1)
    return result


def _check_budget(max_trials, epochs):
    return (check_count("tuning max_trials (--max-trials)", max_trials),
            check_count("tuning epochs (--epochs)", epochs))


def make_tuner(config, tuner="random", max_trials=10, epochs=2, directory="tuning", project_name=None,
               overwrite=False, seed=None, progress=None):
    """A keras-tuner tuner by name (``grid``, ``random``, ``bayesian``, ``hyperband``) over the
    config's search space, maximising ``search.objective`` (``val_accuracy``; see
    :func:`logged_objective`)."""
    max_trials, epochs = _check_budget(max_trials, epochs)
    config = load_config(config)
    if tuner not in TUNERS:
        raise ValueError(f"unknown tuner {tuner!r}; choose one of {', '.join(TUNERS)}")
    if not config.search.searched:
        raise ValueError(f"config {config.name!r} has no [search] table (or it varies nothing): add one with "
                         f"any of {', '.join(SEARCH_DIMENSIONS)}")
    if tuner == "grid":
        ranges = [k for k in config.search.searched
                  if isinstance(getattr(config.search, k), dict) and "step" not in getattr(config.search, k)
                  and k not in ("iterations", "depth")]
        if ranges:
            raise ValueError(f"the grid tuner needs a finite grid: give search.{ranges[0]} as a list of values "
                             "(or a range with a step)")
    objective = keras_tuner.Objective(logged_objective(config), direction="max")
    common = dict(hypermodel=CapsNetHyperModel(config, progress), objective=objective, directory=str(directory),
                  project_name=project_name or config.name, overwrite=overwrite,
                  seed=config.training.seed if seed is None else seed)
    if tuner == "hyperband":
        if epochs < 2:  # its first bracket then holds one trial, and there is no other: no search at all
            raise ValueError("the hyperband tuner with --epochs 1 trains a single trial (its brackets halve an "
                             "epoch budget, and 1 epoch leaves one bracket of one trial): give --epochs 2 or more, "
                             "or use --tuner random or grid")
        return keras_tuner.Hyperband(max_epochs=epochs, **common)
    cls = {"grid": GridSearch, "random": keras_tuner.RandomSearch,
           "bayesian": keras_tuner.BayesianOptimization}[tuner]
    return cls(max_trials=max_trials, **common)


def project_folder(config, directory="tuning", project_name=None):
    """``DIRECTORY/NAME``: the keras-tuner project folder a search of ``config`` uses."""
    return Path(directory) / (project_name or load_config(config).name)


def holds_search(project):
    """Whether the keras-tuner project folder ``project`` (``DIRECTORY/NAME``) holds a search."""
    project = Path(project)
    return (project / "oracle.json").is_file() or (project / "tuner0.json").is_file()


def search(config, tuner="random", max_trials=10, epochs=2, subset=None, directory="tuning", project_name=None,
           resume=False, overwrite=False, verbose=0, progress=None, joining=False):
    """Run a search and return the tuner.

    ``subset`` uses only the first N training examples (then the validation split is carved from
    them). A ``directory``/``project_name`` that already holds a search is refused unless
    ``resume=True`` (continue it) or ``overwrite=True`` (start again), and ``resume=True`` where
    it holds none; ``joining=True`` is a distributed worker joining the chief's search there.
    """
    from capszoo.data import load_splits, make_dataset, steps_per_epoch

    _check_budget(max_trials, epochs)  # before the data loads
    base = tuning_config(config, subset)
    project = project_folder(base, directory, project_name)
    exists = holds_search(project)
    if joining:
        resume, overwrite = True, False
    if exists and not (resume or overwrite):
        raise ValueError(f"{project} already holds a search: pass resume=True (--resume) to continue it or "
                         "overwrite=True (--overwrite) to start again")
    if resume and not exists and not joining:  # a mistyped --directory would otherwise start afresh
        raise ValueError(f"nothing to resume: {project} holds no search (to start one, drop --resume)")
    splits = load_splits(base)  # fails early, with one clear message, when the data is missing
    keras.utils.set_random_seed(base.training.seed)
    found = make_tuner(base, tuner, max_trials, epochs, directory, project_name, overwrite=overwrite and not resume,
                       progress=progress)
    train_ds = make_dataset(*splits.train, base, training=True)
    val_ds = make_dataset(*splits.validation, base, training=False)
    found.search(train_ds, validation_data=val_ds, epochs=epochs, shuffle=False,
                 steps_per_epoch=steps_per_epoch(len(splits.train[1]), base.training.batch_size), verbose=verbose)
    return found


# ---- results ----

def _project_dir(tuner_or_dir):
    path = Path(tuner_or_dir)
    if any(path.glob("trial_*")) or (path / "oracle.json").is_file():
        return path
    projects = [p for p in path.glob("*") if p.is_dir() and any(p.glob("trial_*"))]
    if len(projects) == 1:
        return projects[0]
    if not projects:
        raise ValueError(f"{path} holds no keras-tuner trials (trial_*/trial.json)")
    raise ValueError(f"{path} holds several searches ({', '.join(p.name for p in projects)}): name one")


def _read_trial(path):
    """A trial.json as keras-tuner writes it, or one ValueError naming the file."""
    remedy = "keras-tuner writes it whole; a search stopped while writing leaves it cut: delete that trial folder"
    trial = read_json_object(path, f"the trial record {path}", remedy)
    hyperparameters = trial.get("hyperparameters")
    if not (isinstance(trial.get("trial_id"), str) and isinstance(hyperparameters, dict)
            and isinstance(hyperparameters.get("values"), dict)):
        raise ValueError(f"the trial record {path} lacks trial_id or hyperparameters.values: {remedy}")
    return trial


def _trial_rows(trials, objective):
    rows = []
    for data in trials:
        hps = data.get("hyperparameters", {}).get("values", {})
        metrics = data.get("metrics", {}).get("metrics", {})

        def value(name, metrics=metrics):
            observations = metrics.get(name, {}).get("observations", [])
            return float(observations[-1]["value"][0]) if observations else math.nan

        row = {"trial": data["trial_id"], "status": data.get("status")}
        row.update({k: hps.get(k) for k in SEARCH_DIMENSIONS if k in hps})
        row.update({objective: value(objective), "epochs": value("epochs"), "best_epoch": value("best_epoch"),
                    "seconds": value("seconds")})
        rows.append(row)
    return rows


def results_frame(tuner_or_dir, objective=None):
    """One row per trial: its hyperparameters, best ``objective`` value, epochs, best epoch,
    seconds and status, from a tuner or from its project directory on disk (give ``objective``
    there if the search maximised neither ``val_accuracy`` nor, with a decoder, its
    ``val_class_scores_accuracy``)."""
    import pandas as pd

    if hasattr(tuner_or_dir, "oracle"):
        oracle = tuner_or_dir.oracle
        objective = objective or oracle.objective.name
        trials = [t.get_state() for t in oracle.trials.values()]  # the same record as trial.json
    else:
        project = _project_dir(tuner_or_dir)
        trials = [_read_trial(path) for path in sorted(project.glob("trial_*/trial.json"))]
        if not objective:  # the files do not record it: the default, as the trials logged it
            logged = {name for data in trials for name in data.get("metrics", {}).get("metrics", {})}
            default = SearchConfig().objective
            objective = DECODER_ACCURACY if default not in logged and DECODER_ACCURACY in logged else default
    rows = _trial_rows(trials, objective)
    hps = [k for k in SEARCH_DIMENSIONS if any(k in row for row in rows)]
    columns = ["trial", "status", *hps, objective, "epochs", "best_epoch", "seconds"]
    frame = pd.DataFrame(rows, columns=columns)
    return frame.sort_values("trial", key=lambda s: s.astype(int)).reset_index(drop=True)


def load_trial(config, tuner_or_dir, trial_id):
    """The trained model of one finished trial, and its config: ``config`` (the search's) with the
    trial's hyperparameters, carrying the weights keras-tuner kept for the trial (its best epoch)."""
    from capszoo.training import build_model

    project = _project_dir(tuner_or_dir.project_dir if hasattr(tuner_or_dir, "oracle") else tuner_or_dir)
    folder = project / f"trial_{trial_id}"
    if not (folder / "trial.json").is_file():
        raise ValueError(f"{project} has no trial {trial_id!r}")
    values = _read_trial(folder / "trial.json")["hyperparameters"]["values"]
    weights = folder / "checkpoint.weights.h5"
    if not weights.is_file():
        raise ValueError(f"trial {trial_id} in {project} has no weights (it did not finish an epoch)")
    from capszoo.runs import load_weights_checked

    config = trial_config(load_config(config), values)
    with warnings.catch_warnings():  # the checkpoint has optimizer slots a fresh model lacks: expected
        warnings.simplefilter("ignore", UserWarning)
        model = load_weights_checked(build_model(config), weights)
    return model, config


def pivot(frame, rows="depth", columns="lam", values=None):
    """The papers' layout: one row per ``rows`` value, one column per ``columns`` value, holding the
    best ``values`` (the objective, ``val_accuracy``) over the other hyperparameters."""
    values = values or next(c for c in frame.columns if c.startswith("val_"))
    missing = [c for c in (rows, columns) if c not in frame.columns]
    if missing:
        raise ValueError(f"the trials have no {missing[0]!r} hyperparameter; they have "
                         f"{', '.join(c for c in frame.columns if c in SEARCH_DIMENSIONS)}")
    done = frame[frame.status == "COMPLETED"] if "status" in frame.columns else frame
    return done.pivot_table(index=rows, columns=columns, values=values, aggfunc="max")


def to_markdown(table, percent=True, digits=2, index=True):
    """A pandas table as a GitHub Markdown table (no ``tabulate`` needed): floats as percentages
    with ``digits`` decimals, or with ``percent=False`` to ``digits + 2`` significant digits."""
    def cell(v):
        if isinstance(v, float) and math.isnan(v):
            return "–"
        if isinstance(v, (float, np.floating)):
            return f"{100 * v:.{digits}f}" if percent else f"{v:.{digits + 2}g}"
        return str(v)

    index_name = table.index.name or ""
    corner = [f"{index_name} \\ {table.columns.name}" if table.columns.name else index_name] if index else []
    header = [*corner, *[f"{c:g}" if isinstance(c, float) else str(c) for c in table.columns]]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for label, row in table.iterrows():
        lines.append("| " + " | ".join([*([str(label)] if index else []), *[cell(v) for v in row]]) + " |")
    return "\n".join(lines)


def best_config(tuner, trial=None) -> Config:
    """The config of the best trial (or of ``trial``), as it ran: the base config with the trial's
    hyperparameters and the epochs it trained for, so that ``capszoo train`` on it repeats the trial."""
    trial = trial or tuner.oracle.get_best_trials(1)[0]
    base = tuner.hypermodel.base
    config = trial_config(base, {k: trial.hyperparameters.values.get(k) for k in SEARCH_DIMENSIONS})
    epochs = trial.metrics.get_last_value("epochs") if trial.metrics.exists("epochs") else None
    searched = ", ".join(base.search.searched)
    return config.replace(
        name=f"{base.name}-best", search=SearchConfig(),
        training={"epochs": int(epochs)} if epochs else {},
        description=f"Best trial ({trial.trial_id}) of a {type(tuner).__name__} search over {searched} "
                    f"from {base.name}.")


def export_best(tuner, out_dir):
    """Write the best trial's ``config.toml`` (trainable with ``capszoo train``), its weights
    (``model.weights.h5``: the best epoch of the best trial) and ``trial.json`` into ``out_dir``,
    a folder that ``capszoo eval`` / ``predict`` / ``export`` accept as a run folder."""
    from capszoo.training import save_model_weights

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    trial = tuner.oracle.get_best_trials(1)[0]
    config = best_config(tuner, trial)
    with warnings.catch_warnings():  # the trial checkpoint has optimizer slots a fresh model lacks: expected
        warnings.simplefilter("ignore", UserWarning)
        model = tuner.get_best_models(1)[0]
    (out / "config.toml").write_text(config.to_toml())
    save_model_weights(model, config, out / "model.weights.h5")
    record = {"trial": trial.trial_id, "score": trial.score, "hyperparameters": trial.hyperparameters.values,
              "objective": tuner.oracle.objective.name}
    (out / "trial.json").write_text(json.dumps(record, indent=2))
    return out
