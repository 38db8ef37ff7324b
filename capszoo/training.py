"""Training and evaluation with the papers' recipe, shared by the Python API and the CLI.

A run folder holds::

    config.toml            the exact config trained (with command-line overrides applied)
    history.csv            one row per epoch (appended to on resume)
    checkpoints/           epoch-NNNN.keras: model + optimizer after epoch NNNN (latest only)
    model.weights.h5       final weights
    metrics.json           test accuracy and loss, epochs, wall time, throughput, backend,
                           hardware, versions, dataset source (and its sha256 if offline)
    metrics-epoch-NNNN.json
                           a resumed run's predecessor's metrics.json, by the epochs it ended
                           at (the card adds up every run's wall time)
    warm_starts.json       only in a run that continues a published zoo entry or another
                           run's weights: where the optimizer started afresh
                           (:func:`warm_start_from_zoo`, :func:`warm_start_from_run`)
"""

from __future__ import annotations

import contextlib
import importlib
import json
import math
import os
import platform
import re
import tempfile
import threading
import time
from pathlib import Path

import keras
import numpy as np

from capszoo.config import DATA_LOCATION_FIELDS, Config, load_config, zoo_entry_config
from capszoo.data import (
    class_names,
    default_pipeline,
    examples_per_epoch,
    load_splits,
    make_dataset,
    steps_per_epoch,
)
from capszoo.models import CapsNet, check_image_values
from capszoo.ops import ClassAccuracy, MarginLoss
from capszoo.runs import EARLIER_METRICS, METRICS_FILE, RUN_ACCOUNT, archive_metrics

CHECKPOINT_PATTERN = re.compile(r"epoch-(\d{4,})\.keras$")
WARM_STARTS_FILE = "warm_starts.json"
SCORES = ("accuracy", "loss", "examples")  # what evaluate() measures, as metrics.json records each split


class TrainingError(RuntimeError):
    """Training stopped for a reason the user must act on (diverged loss, bad run folder)."""


@keras.saving.register_keras_serializable(package="capszoo")
class ReconstructionLoss(keras.losses.Loss):
    """Sum of squared pixel errors per image (Sabour et al. weight it by 0.0005)."""

    def __init__(self, name="reconstruction_loss", **kwargs):
        super().__init__(name=name, **kwargs)

    def call(self, y_true, y_pred):
        error = keras.ops.square(keras.ops.cast(y_true, y_pred.dtype) - y_pred)
        return keras.ops.sum(keras.ops.reshape(error, (keras.ops.shape(error)[0], -1)), axis=-1)


def compile_model(model, config: Config):
    if config.model.return_capsules:
        raise ValueError("model.return_capsules adds an output that has no training target: train with it off, "
                         "then load the weights into a model built with it on")
    t = config.training
    margin = MarginLoss(t.m_plus, t.m_minus, t.down_weight)
    averaging = {"use_ema": True, "ema_momentum": t.ema_momentum} if t.ema_momentum else {}
    optimizer = keras.optimizers.Adam(t.learning_rate, **averaging)
    # logs: accuracy, val_accuracy; with a decoder class_scores_accuracy, val_class_scores_accuracy
    accuracy = ClassAccuracy(name="accuracy")  # ids or one-hot rows; SparseCategoricalAccuracy took ids only
    if config.model.decoder:
        model.compile(optimizer=optimizer,
                      loss={"class_scores": margin, "reconstruction": ReconstructionLoss()},
                      loss_weights={"class_scores": 1.0, "reconstruction": t.reconstruction_weight},
                      metrics={"class_scores": [accuracy]})
    else:
        model.compile(optimizer=optimizer, loss=margin, metrics=[accuracy])
    return model


def build_model(config: Config, compile=True, precision="float32"):
    """The config's model; ``precision`` is a Keras dtype policy for its convolutions (training
    passes ``config.training.precision``; inference and published figures use float32)."""
    model = CapsNet(config.model, name=re.sub(r"\W", "_", config.name) or "capsnet", dtype=precision)
    return compile_model(model, config) if compile else model


def save_model_weights(model, config: Config, path):
    """Save the model's weights only: Keras' ``save_weights`` on a compiled model also stores the
    optimizer's moments (3x the size with Adam), which a published model must not carry.
    Returns that bare float32 model, uncompiled."""
    bare = build_model(config, compile=False)
    bare.set_weights(model.get_weights())
    bare.save_weights(path)
    return bare


def learning_rate(config: Config, epoch):
    """Adam's learning rate in (0-based) ``epoch``: ``lr * lr_decay ** epoch``."""
    return config.training.learning_rate * config.training.lr_decay ** epoch


def lr_schedule(config: Config):
    """The Keras callback that sets Adam's learning rate each epoch (:func:`learning_rate`)."""
    return keras.callbacks.LearningRateScheduler(lambda epoch, lr: learning_rate(config, epoch))


class AtomicCheckpoint(keras.callbacks.Callback):
    """After every epoch, save model + optimizer as ``epoch-NNNN.keras``, atomically.

    The file is written under a temporary name and renamed, so a kill at any moment leaves
    either the previous checkpoint or the new one complete; older checkpoints are then removed.
    """

    def __init__(self, folder):
        super().__init__()
        self.folder = Path(folder)

    def on_epoch_end(self, epoch, logs=None):
        self.folder.mkdir(parents=True, exist_ok=True)
        final = self.folder / f"epoch-{epoch + 1:04d}.keras"
        fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=".partial-", suffix=".keras")
        os.close(fd)
        try:
            self.model.save(tmp)
            os.replace(tmp, final)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
        for old in self.folder.glob("epoch-*.keras"):
            if old != final:
                old.unlink()


class TimeLimit(keras.callbacks.Callback):
    """Stop after the epoch at which another epoch, as long as the longest so far, would end
    past ``seconds`` since training began; counts the epochs it let finish.

    The first epoch of a run also traces and compiles the training step (157 s against 8 s per
    epoch after it for CIFAR-10 on a shared GPU), so once a later epoch has finished only the
    later epochs count as the longest.
    """

    def __init__(self, seconds):
        super().__init__()
        self.seconds = seconds
        self.completed = 0
        self.stopped = False

    def on_train_begin(self, logs=None):
        self.start = self.epoch_start = time.perf_counter()
        self.durations = []

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch_start = time.perf_counter()

    @property
    def longest(self):
        return max(self.durations[1:] or self.durations or [0.0])

    def on_epoch_end(self, epoch, logs=None):
        now = time.perf_counter()
        self.completed += 1
        self.durations.append(now - self.epoch_start)
        if self.seconds is not None and now - self.start + self.longest > self.seconds:
            self.stopped = True
            self.model.stop_training = True


# What a resumed run may change: how long it trains, and where the data comes from.
RESUMABLE_CHANGES = {"data": DATA_LOCATION_FIELDS, "training": {"epochs"}}


def _recipe_changes(previous, config):
    """``section.key: old -> new`` for each data or training field (but RESUMABLE_CHANGES) in which
    ``config`` differs from ``previous``."""
    changes = []
    for section, allowed in RESUMABLE_CHANGES.items():
        old, new = getattr(previous, section).to_dict(), getattr(config, section).to_dict()
        changes += [f"{section}.{key}: {old[key]!r} -> {new[key]!r}" for key in old
                    if key not in allowed and old[key] != new[key]]
    return changes


def latest_checkpoint(folder):
    """``(epochs_done, path)`` of the newest complete checkpoint in ``folder``, or ``(0, None)``."""
    best = (0, None)
    for path in Path(folder).glob("epoch-*.keras"):
        match = CHECKPOINT_PATTERN.search(path.name)
        if match and int(match.group(1)) > best[0]:
            best = (int(match.group(1)), path)
    return best


def _seed_warm_start(config: Config, run, weights, done, earlier, starts):
    """Write into the new run folder ``run`` what ``resume`` needs to train ``weights`` (a list
    of arrays for ``config``'s model) on from epoch ``done`` with a fresh optimizer: a checkpoint
    after epoch ``done``, the earlier runs' metrics (dicts, each kept as the
    ``metrics-epoch-NNNN.json`` of the epochs it ended at) and ``warm_starts.json`` (``starts``)."""
    if latest_checkpoint(run / "checkpoints")[1] is not None or (run / METRICS_FILE).exists():
        raise TrainingError(f"run folder {run} already holds a run: continue it with --resume, or choose "
                            "another --out")
    model = build_model(config, precision=config.training.precision)
    model.set_weights(weights)
    model.optimizer.build(model.trainable_variables)  # a fresh Adam: zero moments, no step taken
    (run / "checkpoints").mkdir(parents=True, exist_ok=True)
    model.save(run / "checkpoints" / f"epoch-{done:04d}.keras")
    for metrics in earlier:
        _write_atomic(run / EARLIER_METRICS.format(int(metrics["epochs"])), json.dumps(metrics, indent=2))
    _write_atomic(run / WARM_STARTS_FILE, json.dumps(starts, indent=2))


def _check_continuable(config: Config, what, done):
    if done >= config.training.epochs:
        raise TrainingError(f"{what} has already been trained for {done} of {config.training.epochs} epochs: "
                            "nothing to continue (raise training.epochs, or --epochs)")


def warm_start_from_zoo(config: Config, run):
    """Seed the run folder ``run`` to continue the published weights of zoo entry ``config.name``.

    A zoo entry keeps its weights but neither the run folder it was trained in nor Adam's
    moments, so it cannot be resumed exactly. This writes what ``resume`` needs instead:

    * a checkpoint after the card's epochs holding the published weights with a fresh
      optimizer, so the learning-rate schedule and the data stream go on from that epoch;
    * the card's training runs as the predecessors' ``metrics-epoch-NNNN.json``, so the next
      card accounts for every run behind its weights;
    * ``warm_starts.json``: the card's earlier warm starts plus this one (epoch, weights sha256),
      which the run's metrics and the next card carry.

    Returns the epochs the entry had been trained for.
    """
    from capszoo import zoo

    run = Path(run)
    name = config.name
    card = zoo.read_card(name)
    if card is None:
        raise TrainingError(f"zoo entry {name!r} has no published weights to continue: train it with "
                            f"`capszoo train {name}`")
    if config.model != zoo_entry_config(name).model:
        raise TrainingError(f"cannot continue {name!r} with another model configuration")
    done = int(card["epochs"])
    _check_continuable(config, f"zoo entry {name!r}", done)
    # Cards published before per-run accounts (8 of the zoo's) describe their one run themselves;
    # their "epochs" is a count, not a [first, last] span.
    parts = card.get("training_runs") or [{**card, "epochs": [card.get("resumed_from_epoch") or 0, done]}]
    earlier = []
    for i, part in enumerate(parts):
        first, last = part["epochs"]
        earlier.append({"name": name, "epochs": last, "resumed_from_epoch": first,
                        **{k: part.get(k) for k in RUN_ACCOUNT}})
        if earlier[-1]["data_pipeline"] is None and i == len(parts) - 1:  # cards before per-run pipelines
            earlier[-1]["data_pipeline"] = card.get("data_pipeline")      # name only the last run's
    starts = [*card.get("warm_starts", []),
              {"epoch": done, "weights_sha256": card["weights_sha256"],
               "optimizer": "fresh: the published weights carry no optimizer state"}]
    # zoo.load checks the card against the entry's config and the file against the card's sha256
    _seed_warm_start(config, run, zoo.load(name, compile=False).get_weights(), done, earlier, starts)
    return done


def warm_start_from_run(config: Config, run, source):
    """Seed the new run folder ``run`` to continue the final weights of the finished run folder
    ``source`` with ``config``'s recipe, which may differ from the source's in anything but the
    model (weight averaging added, say): the learning-rate schedule and the data stream go on
    from the epoch the source ended at, with a fresh optimizer, as :func:`warm_start_from_zoo`
    does for a published entry. The source's runs become the predecessors, so the card of a run
    so continued accounts for all of them, and ``warm_starts.json`` names the source and the
    sha256 of its weights. Returns the epochs the source had been trained for.
    """
    from capszoo.data import sha256_file
    from capszoo.runs import training_runs

    run, source = Path(run), Path(source)
    weights = source / "model.weights.h5"
    if not ((source / METRICS_FILE).is_file() and weights.is_file() and (source / "config.toml").is_file()):
        raise TrainingError(f"{source} is not a finished run folder (config.toml, model.weights.h5 and "
                            f"{METRICS_FILE}): nothing to continue from")
    previous = Config.from_toml(source / "config.toml")
    if previous.model != config.model:
        raise TrainingError(f"cannot continue {source}: its weights are of another model configuration")
    earlier = training_runs(source)
    done = int(earlier[-1]["epochs"])
    _check_continuable(config, f"run {source}", done)
    model = build_model(previous, compile=False)
    model.load_weights(weights)
    starts = [*json.loads((source / WARM_STARTS_FILE).read_text() if (source / WARM_STARTS_FILE).is_file()
                          else "[]"),
              {"epoch": done, "weights_sha256": sha256_file(weights), "run": str(source),
               "optimizer": "fresh: the run's recipe changed (its optimizer state is not carried over)"}]
    _seed_warm_start(config, run, model.get_weights(), done, earlier, starts)
    return done


def data_parallel_devices():
    """The number of devices that the current ``keras.distribution`` (``DataParallel`` on JAX)
    splits each batch over; 1 without one."""
    current = keras.distribution.distribution()
    if current is None:
        return 1
    mesh = current.device_mesh
    return int(dict(zip(mesh.axis_names, mesh.shape, strict=True))[current.batch_dim_name])


@contextlib.contextmanager
def undistributed():
    """No ``keras.distribution`` inside (the one set is restored after). Evaluation runs so: a
    split's last batch seldom divides by the device count, and JAX refuses to shard one that does
    not (``IndivisibleError``), which Keras does not guard against; the weights a data-parallel
    run trains are replicated on every device, so one device evaluates them as they are."""
    current = keras.distribution.distribution()
    keras.distribution.set_distribution(None)
    try:
        yield
    finally:
        keras.distribution.set_distribution(current)


class UndistributedValidation(keras.callbacks.Callback):
    """Keras' end-of-epoch validation (the same ``val_*`` logs), run :func:`undistributed`, for a
    data-parallel run; ``fit`` then gets no ``validation_data``."""

    def __init__(self, dataset, averaged=None):
        super().__init__()
        self.dataset = dataset
        self.averaged = averaged  # a SwapEMAWeights: fit's own validation would call it around evaluate

    def on_epoch_end(self, epoch, logs=None):
        if self.averaged is not None:
            self.averaged.on_test_begin()
        try:
            with undistributed():
                results = self.model.evaluate(self.dataset, verbose=0, return_dict=True)
        finally:
            if self.averaged is not None:
                self.averaged.on_test_end()
        if logs is not None:  # the dict the later callbacks (CSV log, history, progress bar) read
            logs.update({f"val_{name}": value for name, value in results.items()})


class NanGuard(keras.callbacks.Callback):
    """Stop at the first non-finite training loss and remember where it happened.

    Reading a batch's loss waits for that training step to finish. Keras calls a callback with a
    batch-level hook in the training loop itself, so every step would wait for the accelerator
    before the next batch is even prepared; declared ``async_safe``, the guard is called from
    Keras' worker threads instead (JAX and PyTorch backends; TensorFlow's loop stays
    synchronous), and the loop runs ahead. A divergence then stops training some steps after
    the bad one, which is still reported as the first non-finite batch. From those threads it
    must not touch ``self.model``: on JAX that property copies the training state into the
    model's variables, racing the loop (which then reads arrays it has already given away).
    """

    async_safe = True

    def __init__(self):
        super().__init__()
        self.epoch = 0
        self.failure = None
        self._lock = threading.Lock()
        self._trainee = None

    def set_model(self, model):
        super().set_model(model)
        self._trainee = model

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch  # Keras waits for the previous epoch's batch hooks before this one

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            with self._lock:  # worker threads may report batches out of order
                if self.failure is None or (self.epoch + 1, batch + 1) < self.failure[:2]:
                    self.failure = (self.epoch + 1, batch + 1, float(loss))
            self._trainee.stop_training = True


def hardware():
    """What the run ran on, for metrics and model cards."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    accelerators = []
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        accelerators = [d.device_kind for d in jax.devices() if d.platform != "cpu"]
    elif backend == "tensorflow":
        import tensorflow as tf

        accelerators = [d.name for d in tf.config.list_physical_devices("GPU")]
    elif backend == "torch":
        import torch

        accelerators = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return {"cpu": cpu, "cpu_count": os.cpu_count(), "accelerators": accelerators, "platform": platform.platform()}


def versions():
    backend = keras.backend.backend()
    info = {"python": platform.python_version(), "keras": keras.__version__, "backend": backend}
    if backend in ("jax", "torch"):  # the array library that ran the numbers
        info[backend] = importlib.import_module(backend).__version__
    try:
        import tensorflow as tf

        info["tensorflow"] = tf.__version__
    except ImportError:
        pass
    return info


DISTRIBUTE_CHOICES = ("mirrored", "multi_worker")


def check_distribute(distribute):
    """Refuse an unknown strategy name, or a ``tf.distribute`` one on another backend.

    ``train`` calls this before it reads data or makes a run folder, so a bad ``distribute``
    leaves nothing behind.
    """
    if distribute in (None, "", "none"):
        return
    if distribute not in DISTRIBUTE_CHOICES:
        raise ValueError(f"distribute must be {' or '.join(map(repr, DISTRIBUTE_CHOICES))}, got {distribute!r}")
    if keras.backend.backend() != "tensorflow":
        raise ValueError(f"distribute={distribute!r} uses tf.distribute and needs KERAS_BACKEND=tensorflow; on JAX "
                         "use keras.distribution.DataParallel (see the README)")


def distribution_strategy(distribute):
    """A ``tf.distribute`` strategy by name (TensorFlow backend only), or ``None``."""
    check_distribute(distribute)
    if distribute in (None, "", "none"):
        return None
    import tensorflow as tf

    if distribute == "mirrored":
        return tf.distribute.MirroredStrategy()
    return tf.distribute.MultiWorkerMirroredStrategy()  # cluster from the TF_CONFIG variable


def _truncate_history(path, epochs_done):
    """Keep the history rows of the epochs a resumed run will not redo."""
    if not path.is_file():
        return
    lines = path.read_text().splitlines(keepends=True)
    kept = lines[:1] + [line for line in lines[1:] if line.split(",", 1)[0].isdigit()
                        and int(line.split(",", 1)[0]) < epochs_done]
    _write_atomic(path, "".join(kept))


def _write_atomic(path, text):
    tmp = Path(f"{path}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def run_folder(config, out_dir=None):
    """The folder a training run of ``config`` writes: ``out_dir``, by default ``runs/NAME``."""
    return Path(out_dir or Path("runs") / load_config(config).name)


def train(config, out_dir=None, epochs=None, data_dir=None, resume=False, distribute=None, verbose="auto",
          time_limit=None, precision=None, test=None, from_zoo=False, from_run=None):
    """Train ``config`` (a :class:`Config`, a TOML path or a zoo name) and evaluate the result.

    Args:
        out_dir: the run folder (default ``runs/NAME``).
        epochs, data_dir, precision: override ``training.epochs`` / ``data.data_dir`` /
            ``training.precision``.
        resume: continue from the newest checkpoint in ``out_dir`` (from the start if it holds
            none yet); ``out_dir`` must exist. Without it a folder that already holds checkpoints
            is refused.
        distribute: ``None``, ``"mirrored"`` (all local devices) or ``"multi_worker"``
            (``TF_CONFIG``), TensorFlow backend. On JAX, set ``keras.distribution.DataParallel()``
            before the call instead: batches are split over its devices (the batch size must
            divide by their count; an epoch's last batch loses what does not split) and the
            validation and test splits are evaluated whole, on one device.
        time_limit: seconds of training after which no further epoch is started (see
            :class:`TimeLimit`). The run then ends early but complete: weights saved, test split
            evaluated, ``metrics["epochs"]`` the epochs actually trained and
            ``metrics["epochs_planned"]`` the config's. The learning-rate schedule stays the
            config's, so ``resume`` continues it exactly.
        test: evaluate on the test split at the end. By default only a run that holds out no
            validation data does: one that holds some out (``data.validation_fraction`` > 0) is
            there to choose between settings, which must not be done on the test split, so its
            ``metrics`` give ``validation_accuracy`` and ``validation_loss`` and a ``None`` test
            accuracy and loss. ``test=True`` evaluates it on both.
        from_zoo: continue the published weights of the zoo entry ``config`` names from the
            epoch its card ends at, with a fresh optimizer (see :func:`warm_start_from_zoo`);
            the run folder must be new. A run stopped by ``time_limit`` then goes on with ``resume``.
        from_run: a finished run folder whose final weights to continue, likewise, with
            ``config``'s recipe for the same model (see :func:`warm_start_from_run`).

    Returns ``(model, metrics)``; ``metrics`` is also written to ``out_dir/metrics.json``.
    """
    if time_limit is not None and not time_limit > 0:
        raise ValueError(f"time_limit must be a positive number of seconds, got {time_limit!r}")
    check_distribute(distribute)
    config = load_config(config).with_overrides(epochs=epochs, data_dir=data_dir, precision=precision)
    run = run_folder(config, out_dir)
    checkpoints = run / "checkpoints"
    if from_zoo and from_run is not None:
        raise ValueError("continue either the published weights (from_zoo) or a run's (from_run), not both")
    warm = from_zoo or from_run is not None
    if resume and not warm and not run.is_dir():  # a mistyped --out would otherwise start afresh, for hours
        raise TrainingError(f"nothing to resume: run folder {run} does not exist (to start a new run, drop --resume)")
    splits = None
    if warm:
        splits = load_splits(config)  # the data must be there before a run folder is made
        if from_zoo:
            warm_start_from_zoo(config, run)
        else:
            warm_start_from_run(config, run, from_run)
        resume = True
    done, checkpoint = latest_checkpoint(checkpoints)
    if checkpoint is not None and not resume:
        raise TrainingError(f"run folder {run} already holds a checkpoint after epoch {done}: pass --resume "
                            "(resume=True) to continue it, or choose another --out")
    if resume and checkpoint is not None and (run / "config.toml").is_file():
        previous = Config.from_toml(run / "config.toml")
        if previous.model != config.model:
            raise TrainingError(f"cannot resume {run}: its checkpoint is of another model configuration")
        if previous.training.precision != config.training.precision:  # the checkpoint keeps its own policy
            raise TrainingError(f"cannot resume {run} in {config.training.precision}: its checkpoint was trained in "
                                f"{previous.training.precision}")
        changed = _recipe_changes(previous, config)
        if changed:  # the run's card would name a recipe its first epochs did not follow
            raise TrainingError(f"cannot resume {run}: its checkpoint was trained with another recipe "
                                f"({'; '.join(changed)}); train it from the start in another run folder")
    if splits is None:
        splits = load_splits(config)  # fails early, with a clear message, if the data is missing
    devices = data_parallel_devices()
    if config.training.batch_size % devices:  # every batch would fail deep in JAX's sharding
        raise TrainingError(f"training.batch_size {config.training.batch_size} does not split over the {devices} "
                            f"devices of the keras.distribution set: choose a multiple of {devices}")
    run.mkdir(parents=True, exist_ok=True)
    _write_atomic(run / "config.toml", config.to_toml())

    keras.utils.set_random_seed(config.training.seed)
    strategy = distribution_strategy(distribute)
    with strategy.scope() if strategy else contextlib.nullcontext():
        if checkpoint is not None:
            model = keras.saving.load_model(checkpoint)
        else:
            model = build_model(config, precision=config.training.precision)
    _truncate_history(run / "history.csv", done)
    train_ds = make_dataset(*splits.train, config, training=True, start_epoch=done, multiple=devices)
    used = examples_per_epoch(len(splits.train[1]), config.training.batch_size, devices)
    val_ds = make_dataset(*splits.validation, config, training=False) if splits.validation else None
    guard, clock = NanGuard(), TimeLimit(time_limit)
    # validation with the averaged weights; fit puts them in the model for good at its end
    averaged = keras.callbacks.SwapEMAWeights() if config.training.ema_momentum else None
    if averaged is not None:
        averaged.set_model(model)
    callbacks = [
        *([UndistributedValidation(val_ds, averaged)] if devices > 1 and val_ds is not None else []),
        *([averaged] if averaged is not None and devices == 1 else []),
        lr_schedule(config),
        guard,
        clock,
        keras.callbacks.CSVLogger(str(run / "history.csv"), append=checkpoint is not None),
        AtomicCheckpoint(checkpoints),
    ]
    start = time.perf_counter()
    model.fit(train_ds, validation_data=val_ds if devices == 1 else None, epochs=config.training.epochs,
              initial_epoch=done, steps_per_epoch=steps_per_epoch(used, config.training.batch_size),
              shuffle=False,  # the stream is shuffled per epoch already (make_dataset)
              callbacks=callbacks, verbose=verbose)
    wall = time.perf_counter() - start
    if guard.failure:
        epoch, batch, loss = guard.failure
        raise TrainingError(f"training loss became {loss} at epoch {epoch}, batch {batch}: stopped. Lower "
                            "training.learning_rate, or check the data for NaN/inf values")
    epochs_run = clock.completed
    bare = save_model_weights(model, config, run / "model.weights.h5")
    if config.training.precision != "float32":  # measure what users get: the weights in a float32 model
        model = bare  # evaluate() compiles it
    held_out = splits.validation is not None
    if test is None:
        test = not held_out
    scores = {}
    if held_out:
        scores["validation"] = evaluate(model, config, split="validation", splits=splits)
    if test:
        scores["test"] = evaluate(model, config, splits=splits)
    metrics = {
        "name": config.name,
        "config_sha256": config.sha256(),
        **{f"test_{k}": scores["test"][k] if test else None for k in SCORES},
        **({f"validation_{k}": scores["validation"][k] for k in SCORES} if held_out else {}),
        "epochs": done + epochs_run,
        "epochs_planned": config.training.epochs,
        "stopped_by_time_limit": clock.stopped,
        "epochs_this_run": epochs_run,
        "resumed_from_epoch": done,
        "train_examples": int(len(splits.train[1])),
        "wall_time_s": round(wall, 1),
        "images_per_s": round(epochs_run * used / wall, 1) if epochs_run and wall > 0 else None,
        "dataset": {"name": config.data.dataset, **splits.source},
        "data_pipeline": default_pipeline(),
        "precision": config.training.precision,
        "hardware": hardware(),
        "versions": versions(),
        "distribute": distribute or ("data_parallel" if devices > 1 else None),
        **({"data_parallel_devices": devices, "train_examples_per_epoch": used} if devices > 1 else {}),
    }
    if (run / WARM_STARTS_FILE).is_file():
        metrics["warm_starts"] = json.loads((run / WARM_STARTS_FILE).read_text())
    if done:  # the run this one continued keeps its metrics, for the card's account of all of them
        archive_metrics(run)
    _write_atomic(run / METRICS_FILE, json.dumps(metrics, indent=2))
    return model, metrics


def evaluate(model, config=None, data_dir=None, split="test", splits=None, per_class=False):
    """Accuracy and loss of ``model`` on a split of ``config``'s dataset (``test`` or ``validation``);
    without ``config``, the dataset of the zoo entry ``capszoo.load`` gave the model.
    ``per_class=True`` adds ``per_class``, the :func:`class_table` of the split (one more pass)."""
    config = load_config(model if config is None else config).with_overrides(data_dir=data_dir)
    splits = splits or load_splits(config)
    arrays = splits.named(split)
    if not model.compiled:
        compile_model(model, config)
    dataset = make_dataset(*arrays, config, training=False)
    with undistributed():
        results = model.evaluate(dataset, verbose=0, return_dict=True)
        scores = model.predict(dataset, verbose=0) if per_class else None
    accuracy = next(v for k, v in results.items() if k == "accuracy" or k.endswith("_accuracy"))
    result = {"accuracy": float(accuracy), "loss": float(results["loss"]), "examples": int(len(arrays[1])),
              "split": split}
    if per_class:
        scores = scores["class_scores"] if isinstance(scores, dict) else scores
        result["per_class"] = class_table(arrays[1], np.asarray(scores).argmax(axis=1), class_names(config))
    return result


def class_table(labels, predicted, names):
    """A pandas table with a row per class: ``class`` (its name), ``examples``, ``correct``,
    ``accuracy``, and ``confused_with``, the class most often predicted instead and how often
    (``"Shirt (95)"``), empty where none was."""
    import pandas as pd

    labels, predicted = np.asarray(labels).astype(int), np.asarray(predicted).astype(int)
    classes = len(names)
    confusion = np.zeros((classes, classes), dtype=int)
    np.add.at(confusion, (labels, predicted), 1)
    examples, correct = confusion.sum(axis=1), np.diag(confusion)
    wrong = confusion - np.diag(correct)
    confused = [f"{names[row.argmax()]} ({row.max()})" if row.max() else "" for row in wrong]
    accuracy = np.where(examples > 0, correct / np.maximum(examples, 1), np.nan)  # NaN: no example
    return pd.DataFrame({"class": list(names), "examples": examples, "correct": correct,
                         "accuracy": accuracy.round(4), "confused_with": confused})


def predict_scores(model, images):
    """Class scores for float images in [0, 1]. ``CapsNet.predict`` refuses integer dtypes, NaN/inf
    and values outside [0, 1]; other float dtypes are cast to float32 first."""
    images = np.asarray(images)
    if np.issubdtype(images.dtype, np.floating) and images.dtype != np.float32:
        try:
            with np.errstate(over="raise"):  # only finite values past float32's range raise here
                images = images.astype("float32")
        except FloatingPointError:
            check_image_values(images, model.name)  # raises: such values are outside [0, 1]
            raise
    outputs = model.predict(images, verbose=0)
    return np.asarray(outputs["class_scores"] if isinstance(outputs, dict) else outputs)
