"""Weight averaging (``training.ema_momentum``) and continuing a run's weights (``from_run``)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from capszoo.cli import main
from capszoo.config import load_config
from capszoo.data import load_splits, make_dataset, sha256_file
from capszoo.runs import training_runs
from capszoo.training import TrainingError, build_model, latest_checkpoint, train

ROOT = Path(__file__).resolve().parents[1]


def test_ema_momentum_is_checked_and_only_a_recipe_with_it_changes_its_hash(tiny_config_path):
    config = load_config(tiny_config_path)
    assert config.training.ema_momentum == 0.0
    for bad, message in ((-0.1, "must be >= 0.0"), (1.0, "must be below 1"), (1.5, "must be below 1"),
                         ("0.9", "must be a finite number"), (float("nan"), "must be a finite number")):
        with pytest.raises(ValueError, match=f"training.ema_momentum {message}"):
            config.replace(training={"ema_momentum": bad})
    # 0 is off and leaves the hash of every recipe written before the field existed as it was
    # (tests/test_zoo.py checks each card's config_sha256 against its entry)
    assert config.replace(training={"ema_momentum": 0.99}).sha256() != config.sha256()
    assert config.replace(training={"ema_momentum": 0}).sha256() == config.sha256()


def test_the_toml_round_trip_keeps_the_momentum(tiny_config_path, tmp_path):
    config = load_config(tiny_config_path).replace(training={"ema_momentum": 0.9})
    path = tmp_path / "averaged.toml"
    path.write_text(config.to_toml())
    assert load_config(path).training.ema_momentum == 0.9 and load_config(path).sha256() == config.sha256()


class RecordWeights(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.steps = []

    def on_train_batch_end(self, batch, logs=None):
        self.steps.append([w.copy() for w in self.model.get_weights()])


@pytest.mark.any_backend
def test_training_ends_with_the_moving_average_of_every_steps_weights(tiny_config_path):
    """Against NumPy: average_1 = w_1, average_k = m average_(k-1) + (1 - m) w_k over the weights
    after each step; the model fit leaves holds that average, not the last step's weights."""
    m = 0.8
    config = load_config(tiny_config_path).replace(training={"ema_momentum": m},
                                                   data={"train_subset": 96})
    splits = load_splits(config)
    model = build_model(config)
    record = RecordWeights()
    model.fit(make_dataset(*splits.train, config, training=True), epochs=2, steps_per_epoch=3, shuffle=False, verbose=0,
              callbacks=[record])
    assert len(record.steps) == 6  # 96 images, batch 32, two epochs
    trainable = {id(v) for v in model.trainable_variables}
    mask = [id(v) in trainable for v in model.weights]
    average = record.steps[0]
    for weights in record.steps[1:]:
        average = [m * a + (1 - m) * w if t else w for a, w, t in zip(average, weights, mask, strict=True)]
    final = model.get_weights()
    for got, want, last, t in zip(final, average, record.steps[-1], mask, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
        if t and got.size > 1:
            assert not np.allclose(got, last)  # not merely the last step's weights


@pytest.mark.any_backend
def test_a_run_validates_and_saves_the_averaged_weights_and_checkpoints_both(tiny_config_path, tmp_path):
    run = tmp_path / "run"
    config = load_config(tiny_config_path).replace(training={"ema_momentum": 0.9},
                                                   data={"validation_fraction": 0.2})
    model, metrics = train(config, out_dir=run, verbose=0)
    with open(run / "history.csv") as f:
        last = f.read().splitlines()[-1].split(",")
    header = (run / "history.csv").read_text().splitlines()[0].split(",")
    # The epoch's validation, during fit, saw the weights the run saved and evaluated afterwards
    assert float(last[header.index("val_accuracy")]) == pytest.approx(metrics["validation_accuracy"], abs=1e-6)
    checkpoint = keras.saving.load_model(latest_checkpoint(run / "checkpoints")[1])
    averages = checkpoint.optimizer._model_variables_moving_average
    for saved, average in zip(model.trainable_variables, averages, strict=True):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(saved), keras.ops.convert_to_numpy(average),
                                   rtol=1e-6, atol=1e-7)
    assert any(not np.allclose(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(r))
               for a, r in zip(averages, checkpoint.trainable_variables, strict=True))


def test_a_resumed_averaging_run_ends_where_an_uninterrupted_one_does(tiny_config_path, tmp_path):
    config = load_config(tiny_config_path).replace(training={"ema_momentum": 0.9, "epochs": 3})
    straight, _ = train(config, out_dir=tmp_path / "straight", verbose=0)
    train(config, out_dir=tmp_path / "resumed", epochs=1, verbose=0)
    resumed, metrics = train(config, out_dir=tmp_path / "resumed", resume=True, verbose=0)
    assert (metrics["epochs"], metrics["resumed_from_epoch"]) == (3, 1)
    for a, b in zip(straight.get_weights(), resumed.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_from_run_continues_a_finished_runs_weights_with_another_recipe(tiny_config_path, tmp_path):
    source, run = tmp_path / "source", tmp_path / "averaged"
    config = load_config(tiny_config_path)
    train(config, out_dir=source, epochs=1, verbose=0)
    averaged = config.replace(training={"ema_momentum": 0.5})
    _, metrics = train(averaged, out_dir=run, from_run=source, verbose=0)
    assert (metrics["epochs"], metrics["resumed_from_epoch"], metrics["epochs_this_run"]) == (2, 1, 1)
    starts = json.loads((run / "warm_starts.json").read_text())
    assert starts == metrics["warm_starts"] == [{
        "epoch": 1, "weights_sha256": sha256_file(source / "model.weights.h5"), "run": str(source),
        "optimizer": "fresh: the run's recipe changed (its optimizer state is not carried over)"}]
    chain = training_runs(run)  # the card of a run so continued accounts for the source's run too
    assert [(r["resumed_from_epoch"], r["epochs"]) for r in chain] == [(0, 1), (1, 2)]
    assert load_config(run / "config.toml").training.ema_momentum == 0.5
    # the continued run started from the source's weights: its seeded checkpoint holds them
    with open(run / "history.csv") as f:
        assert [line.split(",")[0] for line in f.read().splitlines()[1:]] == ["1"]
    # a stopped continuation goes on with --resume, as one from the zoo does
    _, metrics = train(averaged, out_dir=run, epochs=3, resume=True, verbose=0)
    assert (metrics["epochs"], metrics["resumed_from_epoch"]) == (3, 2)
    assert json.loads((run / "warm_starts.json").read_text()) == starts


def test_from_run_seeds_its_checkpoint_with_the_sources_weights_and_a_fresh_optimizer(tiny_config_path, tmp_path):
    source = tmp_path / "source"
    config = load_config(tiny_config_path)
    trained, _ = train(config, out_dir=source, epochs=1, verbose=0)
    from capszoo.training import warm_start_from_run

    run = tmp_path / "seeded"
    run.mkdir()
    assert warm_start_from_run(config.replace(training={"ema_momentum": 0.9}), run, source) == 1
    seeded = keras.saving.load_model(run / "checkpoints" / "epoch-0001.keras")
    for a, b in zip(seeded.get_weights(), trained.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert int(seeded.optimizer.iterations) == 0 and seeded.optimizer.use_ema
    assert seeded.optimizer.ema_momentum == pytest.approx(0.9)


def test_from_run_refusals(tiny_config_path, tmp_path):
    source = tmp_path / "source"
    config = load_config(tiny_config_path)
    with pytest.raises(TrainingError, match="is not a finished run folder"):
        train(config, out_dir=tmp_path / "a", from_run=source, verbose=0)
    train(config, out_dir=source, verbose=0)  # 2 of 2 epochs
    with pytest.raises(TrainingError, match=r"has already been trained for 2 of 2 epochs: nothing to continue"):
        train(config, out_dir=tmp_path / "b", from_run=source, verbose=0)
    with pytest.raises(TrainingError, match="its weights are of another model configuration"):
        train(config.replace(model={"lam": 2.0}), out_dir=tmp_path / "c", epochs=3, from_run=source, verbose=0)
    with pytest.raises(ValueError, match="not both"):
        train(config, out_dir=tmp_path / "d", epochs=3, from_run=source, from_zoo=True, verbose=0)
    with pytest.raises(TrainingError, match="already holds a run"):
        train(config, out_dir=source, epochs=3, from_run=source, verbose=0)
    for name in "abcd":
        assert not (tmp_path / name / "checkpoints").exists()  # refused before a checkpoint was written


def test_cli_from_run(tiny_config_path, tmp_path, capsys):
    source = tmp_path / "source"
    train(tiny_config_path, out_dir=source, epochs=1, verbose=0)
    assert main(["train", str(tiny_config_path), "--from-run", str(source), "--out", str(tmp_path / "next"),
                 "--verbose", "0"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["epochs"] == 2
    assert main(["train", str(tiny_config_path), "--from-run", str(tmp_path / "nowhere"), "--out",
                 str(tmp_path / "other"), "--verbose", "0"]) == 2
    assert "is not a finished run folder" in capsys.readouterr().err


AVERAGED_DATA_PARALLEL = """
import csv, json, sys
import jax, keras, numpy as np
from capszoo.config import load_config
from capszoo.training import train
out = sys.argv[2]
config = load_config(sys.argv[1]).replace(data={"train_subset": 287, "validation_fraction": 0.1},
                                          training={"epochs": 2, "batch_size": 32, "ema_momentum": 0.8})
single, one = train(config, out_dir=f"{out}/single", verbose=0)
keras.distribution.set_distribution(keras.distribution.DataParallel())
parallel, many = train(config, out_dir=f"{out}/parallel", verbose=0)
logged = {run: [float(row["val_loss"]) for row in csv.DictReader(open(f"{out}/{run}/history.csv"))]
          for run in ("single", "parallel")}
print(json.dumps({"devices": len(jax.devices()), "single": one, "parallel": many, "logged": logged,
                  "diff": max(float(np.abs(a - b).max()) for a, b in zip(single.get_weights(), parallel.get_weights())),
                  "scale": max(float(np.abs(a).max()) for a in single.get_weights())}))
"""


def test_a_data_parallel_run_validates_with_the_averaged_weights_too(tiny_config_path, tmp_path):
    """Data parallelism on JAX validates in a callback of its own (UndistributedValidation), which
    fit's swap of the averaged weights does not reach: it swaps them itself."""
    pytest.importorskip("jax")
    env = {**os.environ, "KERAS_BACKEND": "jax", "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    run = subprocess.run([sys.executable, "-c", AVERAGED_DATA_PARALLEL, str(tiny_config_path), str(tmp_path)],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["devices"] == 2 and result["parallel"]["distribute"] == "data_parallel"
    assert result["diff"] < 1e-4 * max(1.0, result["scale"]), result["diff"]
    for key in ("validation_accuracy", "validation_loss"):
        assert result["parallel"][key] == pytest.approx(result["single"][key], rel=1e-5, abs=1e-6), key
    # each epoch's validation loss as logged: fit's own validation (one device) and the callback's
    assert result["logged"]["parallel"] == pytest.approx(result["logged"]["single"], rel=1e-5, abs=1e-6)
    assert result["logged"]["parallel"][-1] == pytest.approx(result["parallel"]["validation_loss"], rel=1e-5)
