import csv
import importlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import keras
import numpy as np
import pytest

from capszoo.cli import main
from capszoo.config import load_config
from capszoo.runs import load_trained
from capszoo.training import (
    NanGuard,
    TrainingError,
    class_table,
    evaluate,
    hardware,
    learning_rate,
    train,
    versions,
)

ROOT = Path(__file__).resolve().parents[1]


def history(run):
    with open(run / "history.csv") as f:
        return list(csv.DictReader(f))


def test_train_writes_a_complete_run_folder(tiny_config_path, tmp_path):
    run = tmp_path / "run"
    model, metrics = train(tiny_config_path, out_dir=run, verbose=0)
    assert {p.name for p in run.iterdir()} >= {"config.toml", "history.csv", "checkpoints", "model.weights.h5",
                                               "metrics.json"}
    assert json.loads((run / "metrics.json").read_text()) == metrics
    assert metrics["epochs"] == 2 and metrics["resumed_from_epoch"] == 0
    assert metrics["test_examples"] == 359 and 0.3 < metrics["test_accuracy"] <= 1.0  # chance is 0.1
    assert metrics["dataset"]["kind"] == "sklearn" and metrics["versions"]["backend"]
    assert metrics["hardware"]["cpu_count"] >= 1 and metrics["images_per_s"] > 0
    rows = history(run)
    assert [int(r["epoch"]) for r in rows] == [0, 1]
    config = load_config(run / "config.toml")
    for row in rows:  # learning rate x 0.95 per epoch
        assert float(row["learning_rate"]) == pytest.approx(learning_rate(config, int(row["epoch"])), rel=1e-6)
    assert learning_rate(config, 2) == pytest.approx(0.003 * 0.95**2)
    # The saved weights reproduce the reported test accuracy, evaluated independently.
    loaded, _ = load_trained(run)
    assert evaluate(loaded, config)["accuracy"] == pytest.approx(metrics["test_accuracy"], abs=1e-6)
    x = np.stack([np.zeros((12, 12, 1), np.float32)])
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6)


def test_a_run_holding_out_validation_data_leaves_the_test_split_alone(tiny_config_path, tmp_path, monkeypatch):
    from capszoo import training

    config = load_config(tiny_config_path).replace(data={"validation_fraction": 0.2}, training={"epochs": 1})
    splits_used = []
    real_evaluate = training.evaluate
    monkeypatch.setattr(training, "evaluate", lambda *a, split="test", **k: splits_used.append(split)
                        or real_evaluate(*a, split=split, **k))
    model, metrics = train(config, out_dir=tmp_path / "choose", verbose=0)
    assert splits_used == ["validation"]  # the test split is never evaluated
    assert (metrics["test_accuracy"], metrics["test_loss"], metrics["test_examples"]) == (None, None, None)
    assert metrics["validation_examples"] == 288 and metrics["train_examples"] == 1438 - 288
    assert metrics["validation_accuracy"] == pytest.approx(float(history(tmp_path / "choose")[-1]["val_accuracy"]),
                                                           abs=1e-6)  # the last epoch's, as Keras logged it
    assert metrics["validation_accuracy"] == pytest.approx(evaluate(model, config, split="validation")["accuracy"])
    # Asked for, it reports both; a run without validation data reports the test split alone.
    splits_used.clear()
    _, both = train(config, out_dir=tmp_path / "both", verbose=0, test=True)
    assert splits_used == ["validation", "test"] and both["test_examples"] == 359
    assert both["validation_accuracy"] == metrics["validation_accuracy"]  # same seed, same run
    _, full = train(config.replace(data={"validation_fraction": 0.0}), out_dir=tmp_path / "full", verbose=0)
    assert full["test_examples"] == 359 and "validation_accuracy" not in full


def test_training_with_the_reconstruction_decoder(tiny_config_path, tmp_path):
    config = load_config(tiny_config_path).replace(model={"decoder": True, "decoder_units": [16, 32]},
                                                   training={"epochs": 1})
    model, metrics = train(config, out_dir=tmp_path / "run", verbose=0)
    row = history(tmp_path / "run")[0]
    assert float(row["reconstruction_loss"]) > 0 and float(row["class_scores_loss"]) > 0
    assert 0.1 < metrics["test_accuracy"] <= 1.0
    with pytest.raises(ValueError, match="model.return_capsules adds an output that has no training target"):
        train(config.replace(model={"return_capsules": True}), out_dir=tmp_path / "other", verbose=0)


def test_existing_checkpoints_need_resume(tiny_config_path, tmp_path):
    run = tmp_path / "run"
    train(tiny_config_path, out_dir=run, epochs=1, verbose=0)
    with pytest.raises(TrainingError, match="already holds a checkpoint after epoch 1: pass --resume"):
        train(tiny_config_path, out_dir=run, epochs=2, verbose=0)
    _, metrics = train(tiny_config_path, out_dir=run, epochs=2, resume=True, verbose=0)
    assert metrics["resumed_from_epoch"] == 1 and metrics["epochs_this_run"] == 1
    assert [int(r["epoch"]) for r in history(run)] == [0, 1]


def test_resume_of_a_run_folder_that_does_not_exist_is_refused(tiny_config_path, tmp_path, capsys):
    """`--resume --out` with a mistyped folder started a new run from epoch 0, silently: hours on
    a CPU before anyone noticed. A folder that exists but holds no checkpoint yet (killed in its
    first epoch) still starts from the beginning."""
    with pytest.raises(TrainingError, match=f"nothing to resume: run folder {tmp_path / 'typo'} does not exist "
                                            r"\(to start a new run, drop --resume\)"):
        train(tiny_config_path, out_dir=tmp_path / "typo", epochs=1, resume=True, verbose=0)
    assert not (tmp_path / "typo").exists()
    assert main(["train", str(tiny_config_path), "--out", str(tmp_path / "typo"), "--resume", "--verbose", "0"]) == 2
    assert capsys.readouterr().err.startswith("capszoo train: error: nothing to resume: run folder")
    (tmp_path / "killed").mkdir()
    _, metrics = train(tiny_config_path, out_dir=tmp_path / "killed", epochs=1, resume=True, verbose=0)
    assert metrics["resumed_from_epoch"] == 0 and metrics["epochs"] == 1


def test_resume_after_sigkill_loses_at_most_one_epoch(tiny_config_path, tmp_path):
    run = tmp_path / "run"
    checkpoints = run / "checkpoints"
    cmd = [sys.executable, "-m", "capszoo", "train", str(tiny_config_path), "--out", str(run), "--epochs", "8",
           "--verbose", "0"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while not list(checkpoints.glob("epoch-0002.keras")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = sorted(checkpoints.glob("epoch-*.keras"))
    assert len(done) == 1 and not list(run.glob("metrics.json"))
    completed = int(done[0].stem.split("-")[1])
    assert completed >= 2
    _, metrics = train(tiny_config_path, out_dir=run, epochs=8, resume=True, verbose=0)
    assert metrics["resumed_from_epoch"] == completed  # only the epoch in progress was lost
    assert [int(r["epoch"]) for r in history(run)] == list(range(8))
    assert metrics["test_accuracy"] > 0.5


@pytest.mark.parametrize("limit, first, then, completed", [
    (100, 40, 5, 13),  # 40 s compiling, then 5 s epochs: stops once 5 s more would pass 100 s
    (50, 40, 5, 1),    # after the first epoch only, that epoch is the reserve
    (100, 5, 20, 5),   # a slow later epoch (a shared GPU) raises the reserve
])
def test_time_limit_reserves_the_longest_epoch_after_the_first(monkeypatch, limit, first, then, completed):
    from capszoo import training

    now = [0.0]
    monkeypatch.setattr(training, "time", SimpleNamespace(perf_counter=lambda: now[0]))
    clock, model = training.TimeLimit(limit), SimpleNamespace(stop_training=False)
    clock.set_model(model)
    clock.on_train_begin()
    epoch = 0
    while not model.stop_training and epoch < 1000:
        clock.on_epoch_begin(epoch)
        now[0] += first if epoch == 0 else then
        clock.on_epoch_end(epoch)
        epoch += 1
    assert (clock.completed, clock.stopped) == (completed, True)
    assert now[0] <= limit or completed == 1


def test_time_limit_ends_the_run_early_but_complete_and_resumable(tiny_config_path, tmp_path):
    run = tmp_path / "run"
    with pytest.raises(ValueError, match="time_limit must be a positive number of seconds, got 0"):
        train(tiny_config_path, out_dir=run, time_limit=0, verbose=0)
    assert not run.exists()  # refused before anything is written
    # Any limit shorter than one epoch: that epoch finishes, no second one starts.
    _, metrics = train(tiny_config_path, out_dir=run, epochs=3, time_limit=1e-3, verbose=0)
    assert (metrics["epochs"], metrics["epochs_planned"], metrics["stopped_by_time_limit"]) == (1, 3, True)
    assert metrics["epochs_this_run"] == 1 and [int(r["epoch"]) for r in history(run)] == [0]
    assert (run / "model.weights.h5").is_file() and 0.0 <= metrics["test_accuracy"] <= 1.0
    # The schedule is the config's, so resuming finishes the planned run.
    _, metrics = train(tiny_config_path, out_dir=run, epochs=3, resume=True, time_limit=3600, verbose=0)
    assert (metrics["epochs"], metrics["resumed_from_epoch"], metrics["stopped_by_time_limit"]) == (3, 1, False)
    assert [int(r["epoch"]) for r in history(run)] == [0, 1, 2]


@pytest.mark.any_backend  # on JAX the guard runs in Keras' worker threads (async_safe)
def test_diverging_loss_stops_with_a_clear_error(tiny_config_path, tmp_path):
    config = load_config(tiny_config_path).replace(training={"learning_rate": 1e30})
    with pytest.raises(TrainingError, match=r"training loss became (nan|inf) at epoch 1, batch \d+: stopped"):
        train(config, out_dir=tmp_path / "run", verbose=0)


def test_nan_guard_keeps_the_first_bad_batch_when_reported_out_of_order():
    guard, model = NanGuard(), SimpleNamespace(stop_training=False)
    guard.set_model(model)
    guard.on_epoch_begin(2)
    for batch, loss in [(7, float("nan")), (3, 0.5), (5, float("inf")), (9, float("nan"))]:
        guard.on_train_batch_end(batch, {"loss": loss})
    assert guard.failure == (3, 6, float("inf")) and model.stop_training


def test_missing_data_fails_before_anything_is_written(tmp_path):
    config = load_config("ara-mnist").with_overrides(data_dir=str(tmp_path / "empty"))
    with pytest.raises(ValueError, match="not in the offline folder"):
        train(config, out_dir=tmp_path / "run", verbose=0)
    assert not (tmp_path / "run").exists()


def test_resume_refuses_another_model(tiny_config_path, tmp_path):
    run = tmp_path / "run"
    train(tiny_config_path, out_dir=run, epochs=1, verbose=0)
    other = load_config(tiny_config_path).replace(model={"lam": 2.0})
    with pytest.raises(TrainingError, match="another model configuration"):
        train(other, out_dir=run, epochs=2, resume=True, verbose=0)


def test_resume_refuses_another_data_or_training_recipe_but_not_more_epochs(tiny_config_path, tmp_path):
    """A resumed run whose data or training recipe changed trained silently, and its card named the new
    recipe for weights whose first epochs followed the old one."""
    run = tmp_path / "run"
    train(tiny_config_path, out_dir=run, epochs=1, verbose=0)
    config = load_config(tiny_config_path)
    for change, message in (({"data": {"horizontal_flip": True}}, "data.horizontal_flip: False -> True"),
                            ({"training": {"lr_decay": 0.97}}, "training.lr_decay: 0.95 -> 0.97"),
                            ({"data": {"seed": 3}, "training": {"batch_size": 8}},
                             "data.seed: 0 -> 3; training.batch_size: 32 -> 8")):
        with pytest.raises(TrainingError, match=f"cannot resume {re.escape(str(run))}: its checkpoint was trained "
                                                f"with another recipe \\({re.escape(message)}\\)"):
            train(config.replace(**change), out_dir=run, epochs=2, resume=True, verbose=0)
    _, metrics = train(config.replace(data={"data_dir": str(tmp_path)}), out_dir=run, epochs=2, resume=True, verbose=0)
    assert (metrics["epochs"], metrics["resumed_from_epoch"]) == (2, 1)


MIRRORED_SCRIPT = """
import sys
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import json, numpy as np
from capszoo.cli import main
from capszoo.config import load_config
from capszoo.training import train
config = load_config(sys.argv[1]).replace(data={"train_subset": 256, "validation_fraction": 0.0},
                                          training={"epochs": 1, "batch_size": 32})
single, _ = train(config, out_dir=sys.argv[2] + "/single", verbose=0)
mirrored, metrics = train(config, out_dir=sys.argv[2] + "/mirrored", distribute="mirrored", verbose=0)
diff = max(float(np.abs(a - b).max()) for a, b in zip(single.get_weights(), mirrored.get_weights()))
scale = max(float(np.abs(a).max()) for a in single.get_weights())
print(json.dumps({"devices": len(tf.config.list_logical_devices("CPU")), "diff": diff, "scale": scale,
                  "distribute": metrics["distribute"]}))
"""


@pytest.mark.tensorflow_only
def test_mirrored_strategy_on_two_logical_cpus_matches_single_device(tiny_config_path, tmp_path):
    run = subprocess.run([sys.executable, "-c", MIRRORED_SCRIPT, str(tiny_config_path), str(tmp_path)], cwd=ROOT,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["devices"] == 2 and result["distribute"] == "mirrored"
    assert result["diff"] < 1e-4 * max(1.0, result["scale"]), result


DATA_PARALLEL_SCRIPT = """
import json, sys
import jax, keras, numpy as np
from capszoo.config import load_config
from capszoo.training import TrainingError, train
out, full, result = sys.argv[2], sys.argv[3] == "full", {"devices": len(jax.devices())}
# 258 training examples (the last batch of 2 splits) + 29 held out; 261 + 29
for subset in (287, 290) if full else (290,):
    config = load_config(sys.argv[1]).replace(data={"train_subset": subset, "validation_fraction": 0.1},
                                              training={"epochs": 2, "batch_size": 32})
    if full:
        keras.distribution.set_distribution(None)
        single, one = train(config, out_dir=f"{out}/single-{subset}", verbose=0, test=True)
    keras.distribution.set_distribution(keras.distribution.DataParallel())
    parallel, many = train(config, out_dir=f"{out}/parallel-{subset}", verbose=0, test=True)
    result[subset] = {"parallel": many}
    if full:
        result[subset].update(
            diff=max(float(np.abs(a - b).max()) for a, b in zip(single.get_weights(), parallel.get_weights())),
            scale=max(float(np.abs(a).max()) for a in single.get_weights()), single=one)
if full:
    try:
        train(config.replace(training={"batch_size": 33}), out_dir=f"{out}/odd", verbose=0)
    except TrainingError as err:
        result["odd_batch"] = str(err)
print(json.dumps(result))
"""


@pytest.mark.parametrize("pipeline", ["tf", "numpy"])  # numpy: a GPU machine without TensorFlow
def test_jax_data_parallel_over_two_devices_trains_and_evaluates_every_split(tiny_config_path, tmp_path, pipeline):
    # The README's multi-GPU path (keras.distribution.DataParallel on JAX), on two host devices.
    # It failed at the first split whose last batch did not divide by the device count (here
    # the 359 test digits): JAX's "IndivisibleError" from deep in Keras' data sharding. The
    # comparison with one device runs on the tf pipeline; the numpy one (the same sharding
    # after its own batching) runs the split that failed.
    pytest.importorskip("jax")
    full = pipeline == "tf"
    env = {**os.environ, "KERAS_BACKEND": "jax", "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
           "CAPSZOO_PIPELINE": pipeline}
    run = subprocess.run([sys.executable, "-c", DATA_PARALLEL_SCRIPT, str(tiny_config_path), str(tmp_path),
                          "full" if full else "odd"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["devices"] == 2
    odd = result["290"]
    # 261 examples end in a batch of 5: each epoch leaves one out, and the run still finishes.
    assert (odd["parallel"]["train_examples"], odd["parallel"]["train_examples_per_epoch"]) == (261, 260)
    assert odd["parallel"]["epochs"] == 2 and np.isfinite(odd["parallel"]["test_accuracy"])
    assert odd["parallel"]["data_pipeline"] == pipeline and odd["parallel"]["distribute"] == "data_parallel"
    history = list(csv.DictReader((tmp_path / "parallel-290" / "history.csv").open()))
    assert [row["epoch"] for row in history] == ["0", "1"] and all(row["val_accuracy"] for row in history)
    if not full:
        return
    even = result["287"]
    # Every batch splits: the same training as on one device, the same validation and test figures.
    assert even["diff"] < 1e-4 * max(1.0, even["scale"]), even["diff"]
    for key in ("validation_accuracy", "validation_loss", "test_accuracy", "test_loss"):
        assert even["parallel"][key] == pytest.approx(even["single"][key], rel=1e-5, abs=1e-6), key
    assert even["parallel"]["distribute"] == "data_parallel" and even["single"]["distribute"] is None
    assert (even["parallel"]["data_parallel_devices"], even["parallel"]["train_examples_per_epoch"]) == (2, 258)
    assert result["odd_batch"] == ("training.batch_size 33 does not split over the 2 devices of the "
                                   "keras.distribution set: choose a multiple of 2")


@pytest.mark.any_backend
def test_versions_name_the_array_library_that_ran():
    info = versions()
    backend = info["backend"]
    assert backend == keras.backend.backend()
    assert info[backend] == importlib.import_module(backend).__version__


@pytest.mark.any_backend
def test_hardware_lists_the_active_backends_gpus(monkeypatch):
    """Cards say which GPU trained an entry; each backend is asked in its own way (faked here)."""
    backend = keras.backend.backend()
    if backend == "torch":
        import torch

        monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda i: f"NVIDIA H100 #{i}")
        expected = ["NVIDIA H100 #0", "NVIDIA H100 #1"]
    elif backend == "jax":
        import jax

        monkeypatch.setattr(jax, "devices", lambda: [SimpleNamespace(platform="cpu", device_kind="cpu"),
                                                     SimpleNamespace(platform="gpu", device_kind="NVIDIA H100")])
        expected = ["NVIDIA H100"]
    else:
        import tensorflow as tf

        monkeypatch.setattr(tf.config, "list_physical_devices",
                            lambda kind=None: [SimpleNamespace(name="/physical_device:GPU:0")] if kind == "GPU" else [])
        expected = ["/physical_device:GPU:0"]
    assert hardware()["accelerators"] == expected
    assert hardware()["cpu_count"] >= 1


@pytest.mark.any_backend
def test_class_table_counts_by_hand():
    labels = [0, 0, 0, 1, 1, 2, 2, 2, 2]
    predicted = [0, 1, 2, 1, 1, 0, 0, 1, 2]
    table = class_table(labels, predicted, ["cat", "dog", "ant", "eel"])
    assert table["class"].tolist() == ["cat", "dog", "ant", "eel"]
    assert table["examples"].tolist() == [3, 2, 4, 0] and table["correct"].tolist() == [1, 2, 1, 0]
    np.testing.assert_allclose(table["accuracy"].tolist(), [0.3333, 1.0, 0.25, np.nan])
    # cat: one each to dog and ant (a tie goes to the lower id); ant: two to cat, one to dog
    assert table["confused_with"].tolist() == ["dog (1)", "", "cat (2)", ""]
