import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import keras
import keras_tuner
import numpy as np
import pandas as pd
import pytest

from capszoo import tuning
from capszoo.cli import main
from capszoo.config import Config, SearchConfig, load_config, tomllib
from tests.conftest import TINY_DIGITS_TOML

ROOT = Path(__file__).resolve().parents[1]

GRID = """
[search]
lam = [0.001, 3.0]
depth = [2, 3]
hidden_capsules = [6]
hidden_dim = 4
"""


@pytest.fixture
def search_config(tmp_path):
    path = tmp_path / "tiny-search.toml"
    path.write_text(TINY_DIGITS_TOML + GRID)
    return path


def config_with(search):
    return Config.from_dict({**tomllib.loads(TINY_DIGITS_TOML), "search": search})


# ---- the search space in the config ----

@pytest.mark.parametrize("search, message", [
    ({"lam": [0.0, 1.0]}, r"search.lam must be > 0"),
    ({"lam": []}, r"search.lam must list at least one value"),
    ({"lam": [1.0, 1.0]}, r"search.lam lists a value twice"),
    ({"iterations": [0, 2], "routing": ["dynamic"]}, r"search.iterations must be an integer >= 1"),
    ({"depth": [2, 5]}, r"search.depth must be between 2 and 4"),
    ({"routing": ["dynamc"]}, r"search.routing: unknown routing 'dynamc'"),
    ({"lam": {"min": 3.0, "max": 1.0}}, r"min < max"),
    ({"lam": {"min": 0.1}}, r"a table with min, max"),
    ({"lam": {"min": 0.1, "max": 1.0, "sampling": "exp"}}, r"search.lam.sampling must be one of"),
    ({"iterations": [1, 3]}, r"search.iterations is given but no routing searched \(adaptive_lambda\) takes"),
    ({"objective": "accuracy"}, r"search.objective must name a validation metric"),
    ({"lamda": [1.0]}, r"unknown search config key\(s\): search.lamda"),
])
def test_bad_search_spaces_are_refused_naming_the_key(search, message):
    with pytest.raises(ValueError, match=message):
        config_with(search)


def test_search_table_round_trips_through_toml_and_leaves_the_recipe_hash_alone(tmp_path):
    plain = config_with({})
    searched = config_with({"lam": {"min": 1e-3, "max": 4.0, "sampling": "log"}, "depth": [2, 3]})
    assert searched.sha256() == plain.sha256() and "search" not in plain.to_dict()
    path = tmp_path / "c.toml"
    path.write_text(searched.to_toml())
    again = Config.from_toml(path)
    assert again.search == searched.search and again.search.searched == ["lam", "depth"]


def test_trial_config_applies_depth_lambda_routing_and_learning_rate():
    base = config_with({"depth": [2, 3, 4], "routing": ["dynamic", "adaptive_lambda"], "lam": [1.0],
                        "hidden_capsules": [6, 5], "hidden_dim": 3})
    deep = tuning.trial_config(base, {"depth": 4, "routing": "dynamic", "lam": None, "learning_rate": 0.01})
    assert deep.model.capsules == (6, 5, 10) and deep.model.capsule_dims == (3, 3, 4)
    # the base's λ = 3 does nothing with dynamic routing: it goes back to its default, not into the trial
    assert (deep.model.routing, deep.model.lam, deep.training.learning_rate) == ("dynamic", 1.0, 0.01)
    shallow = tuning.trial_config(base, {"depth": 2, "routing": "adaptive_lambda", "lam": 1.0})
    assert shallow.model.capsules == (10,) and shallow.model.lam == 1.0


def test_conditional_hyperparameters_follow_the_routing():
    base = config_with({"routing": ["dynamic", "adaptive_lambda", "uniform"], "lam": [0.1, 2.0],
                        "iterations": {"min": 1, "max": 4}})
    model = tuning.CapsNetHyperModel(base)
    hp = keras_tuner.HyperParameters()
    model.values(hp)
    names = {h.name: h for h in hp.space}
    assert set(names) == {"routing", "lam", "iterations"}
    assert names["lam"].conditions[0].values == ["adaptive_lambda"]
    assert names["iterations"].conditions[0].values == ["dynamic"]
    for routing, active in [("dynamic", {"iterations"}), ("adaptive_lambda", {"lam"}), ("uniform", set())]:
        trial_hp = hp.copy()
        trial_hp.values["routing"] = routing
        trial_hp.ensure_active_values()  # as the oracle does for a new trial
        values = model.values(trial_hp)
        assert {k for k in ("lam", "iterations") if values[k] is not None} == active, (routing, values)
        assert values["lam"] in (None, 0.1, 2.0) and values["iterations"] in (None, 1, 2, 3, 4)


def test_every_trial_starts_from_the_configs_seed(search_config):
    """Trials of equal depth get identical initial weights whatever ran before them, so a grid
    compares λ and not initialisations; a different depth changes only the capsule kernels."""
    model = tuning.CapsNetHyperModel(search_config)

    def built(**values):
        hp = keras_tuner.HyperParameters()
        model.values(hp)
        hp.values.update(values)
        return model.build(hp)

    first = built(lam=0.001, depth=2)
    keras.random.normal((7,))  # advance the global RNG, as a previous trial's training would
    again, other_lam, deeper = built(lam=0.001, depth=2), built(lam=3.0, depth=2), built(lam=0.001, depth=3)
    for twin in (again, other_lam):
        for a, b in zip(first.weights, twin.weights, strict=True):
            np.testing.assert_array_equal(a.numpy(), b.numpy())
    np.testing.assert_array_equal(first.conv.kernel.numpy(), deeper.conv.kernel.numpy())
    assert deeper.capsule_layers[0].kernel.shape != first.capsule_layers[0].kernel.shape
    assert [layer.routing.lam for layer in other_lam.capsule_layers] == [3.0]


def test_make_tuner_picks_each_tuner_by_name(search_config, tmp_path):
    kinds = {"grid": tuning.GridSearch, "random": keras_tuner.RandomSearch,
             "bayesian": keras_tuner.BayesianOptimization, "hyperband": keras_tuner.Hyperband}
    for name, cls in kinds.items():
        tuner = tuning.make_tuner(search_config, name, max_trials=2, epochs=2, directory=tmp_path / name)
        assert isinstance(tuner, cls) and tuner.oracle.objective.name == "val_accuracy"
        assert tuner.oracle.objective.direction == "max"
    with pytest.raises(ValueError, match="unknown tuner 'optuna'"):
        tuning.make_tuner(search_config, "optuna")
    continuous = config_with({"lam": {"min": 1e-3, "max": 4.0, "sampling": "log"}})
    with pytest.raises(ValueError, match="grid tuner needs a finite grid: give search.lam as a list"):
        tuning.make_tuner(continuous, "grid")
    with pytest.raises(ValueError, match="has no \\[search\\] table"):
        tuning.make_tuner(config_with({}), "random")
    # keras-tuner's Hyperband over 1 epoch has one bracket of one trial: a "search" of one setting.
    with pytest.raises(ValueError, match="the hyperband tuner with --epochs 1 trains a single trial"):
        tuning.make_tuner(search_config, "hyperband", epochs=1, directory=tmp_path / "hb1")
    assert not (tmp_path / "hb1").exists()


def test_best_epoch_metrics_picks_the_best_finite_epoch():
    history = {"val_accuracy": [0.5, float("nan"), 0.7, 0.6], "loss": [4.0, 3.0, 2.0, 1.0]}
    assert tuning.best_epoch_metrics(history, "val_accuracy") == {"val_accuracy": 0.7, "loss": 2.0,
                                                                  "best_epoch": 3.0}
    with pytest.raises(ValueError, match="'val_acc' was not logged"):
        tuning.best_epoch_metrics(history, "val_acc")


def test_markdown_pivot_in_the_papers_layout():
    frame = pd.DataFrame({"trial": ["0", "1", "2", "3", "4"], "status": ["COMPLETED"] * 4 + ["FAILED"],
                          "lam": [0.001, 3.0, 0.001, 3.0, 1.0], "depth": [2, 2, 3, 3, 3],
                          "val_accuracy": [0.1, 0.9, 0.12, 0.8, 0.99]})
    table = tuning.pivot(frame, rows="depth", columns="lam")
    assert table.loc[2, 3.0] == 0.9 and 1.0 not in table.columns  # failed trials are left out
    assert tuning.to_markdown(table).splitlines() == [
        "| depth \\ lam | 0.001 | 3 |", "|---|---|---|", "| 2 | 10.00 | 90.00 |", "| 3 | 12.00 | 80.00 |"]
    with pytest.raises(ValueError, match="no 'iterations' hyperparameter"):
        tuning.pivot(frame, rows="iterations")


@pytest.mark.parametrize("record, message", [
    (b'{"trial_id": "00", "hyperparameters": {"val', r"is not valid JSON"),
    (b"[1, 2]", r"is not a JSON object but list"),
    (b'{"trial_id": "00", "status": "COMPLETED"}', r"lacks trial_id or hyperparameters.values"),
    (b'{"trial_id": "00", "hyperparameters": [1]}', r"lacks trial_id or hyperparameters.values"),
])
def test_a_cut_or_foreign_trial_record_gets_one_error_naming_its_file(search_config, tmp_path, record, message):
    good = {"trial_id": "01", "hyperparameters": {"values": {"lam": 1.0}}, "status": "COMPLETED",
            "metrics": {"metrics": {"val_accuracy": {"observations": [{"value": [0.5]}]}}}}
    project = tmp_path / "tune" / "search"
    for trial, text in (("00", record), ("01", json.dumps(good).encode())):
        (project / f"trial_{trial}").mkdir(parents=True)
        (project / f"trial_{trial}" / "trial.json").write_bytes(text)
    bad = re.escape(str(project / "trial_00" / "trial.json"))
    with pytest.raises(ValueError, match=f"the trial record {bad} {message}.*delete that trial folder"):
        tuning.results_frame(tmp_path / "tune")
    with pytest.raises(ValueError, match=f"the trial record {bad} {message}"):
        tuning.load_trial(search_config, tmp_path / "tune", "00")
    (project / "trial_00" / "trial.json").unlink()  # the remedy: the rest of the search reads again
    assert tuning.results_frame(tmp_path / "tune").val_accuracy.tolist() == [0.5]


@pytest.mark.parametrize("kwargs, message", [
    (dict(subset=0), r"tuning subset \(--subset\) must be an integer >= 1, got 0"),  # 0 once meant all the data
    (dict(subset=-5), r"tuning subset \(--subset\) must be an integer >= 1, got -5"),
    (dict(max_trials=0), r"tuning max_trials \(--max-trials\) must be an integer >= 1, got 0"),
    (dict(epochs=0), r"tuning epochs \(--epochs\) must be an integer >= 1, got 0"),
    (dict(epochs=1.5), r"tuning epochs \(--epochs\) must be an integer >= 1, got 1.5"),
])
def test_a_search_budget_below_one_is_refused_before_the_data_loads(search_config, tmp_path, monkeypatch, kwargs,
                                                                     message):
    import capszoo.data

    def unreachable(*args, **kwargs):
        raise AssertionError("the data was loaded before the arguments were checked")

    monkeypatch.setattr(capszoo.data, "load_splits", unreachable)
    with pytest.raises(ValueError, match=message):
        tuning.search(search_config, "grid", directory=tmp_path / "tune", **kwargs)
    assert not (tmp_path / "tune").exists()


# ---- real (tiny) searches ----

def test_grid_search_runs_every_point_once_and_exports_the_best(search_config, tmp_path, capsys):
    lines = []
    tuner = tuning.search(search_config, "grid", max_trials=10, epochs=1, subset=300, directory=tmp_path / "tune",
                          progress=lambda values, metrics: lines.append((values, metrics)))
    frame = tuning.results_frame(tuner)
    assert len(frame) == 4 and (frame.status == "COMPLETED").all() and len(lines) == 4
    assert sorted(zip(frame.lam, frame.depth, strict=True)) == [(0.001, 2), (0.001, 3), (3.0, 2), (3.0, 3)]
    assert list(frame.columns[:4]) == ["trial", "status", "lam", "depth"]
    assert (frame.epochs == 1).all() and (frame.seconds > 0).all() and frame.val_accuracy.between(0, 1).all()
    on_disk = tuning.results_frame(tmp_path / "tune")  # the parent folder holds one project: found
    pd.testing.assert_frame_equal(on_disk, frame)
    best = frame.loc[frame.val_accuracy.idxmax()]

    # Again on the same folder: refused, or with resume nothing is re-run.
    with pytest.raises(ValueError, match="already holds a search: pass resume=True"):
        tuning.search(search_config, "grid", epochs=1, subset=300, directory=tmp_path / "tune")
    again = tuning.search(search_config, "grid", max_trials=10, epochs=1, subset=300, directory=tmp_path / "tune",
                          resume=True, progress=lambda values, metrics: lines.append(values))
    assert len(lines) == 4 and len(tuning.results_frame(again)) == 4
    # resume on a folder holding no search (a mistyped --directory) used to start one, silently
    with pytest.raises(ValueError, match=f"nothing to resume: {tmp_path / 'tnue'}.* holds no search "
                                         r"\(to start one, drop --resume\)"):
        tuning.search(search_config, "grid", epochs=1, subset=300, directory=tmp_path / "tnue", resume=True)
    assert not (tmp_path / "tnue").exists()

    out = tuning.export_best(tuner, tmp_path / "best")
    config = load_config(out / "config.toml")
    assert (config.model.lam, config.model.depth) == (best.lam, best.depth)
    assert config.training.epochs == 1 and config.search == SearchConfig()
    assert json.loads((out / "trial.json").read_text())["score"] == pytest.approx(best.val_accuracy)
    capsys.readouterr()
    assert main(["eval", str(out), "--split", "validation"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["accuracy"] == pytest.approx(best.val_accuracy, abs=1e-6)

    # Any finished trial loads back with its own hyperparameters and reproduces its score.
    from capszoo.training import evaluate

    worst = frame.loc[frame.val_accuracy.idxmin()]
    model, trial = tuning.load_trial(tuning.tuning_config(search_config, 300), tmp_path / "tune", worst.trial)
    assert (trial.model.lam, trial.model.depth) == (worst.lam, worst.depth)
    assert evaluate(model, trial, split="validation")["accuracy"] == pytest.approx(worst.val_accuracy, abs=1e-6)
    with pytest.raises(ValueError, match="has no trial '99'"):
        tuning.load_trial(search_config, tmp_path / "tune", "99")


def test_random_and_hyperband_searches_complete(search_config, tmp_path):
    random = tuning.search(search_config, "random", max_trials=2, epochs=1, subset=200, directory=tmp_path)
    assert len(tuning.results_frame(random)) == 2
    band = tuning.search(search_config, "hyperband", epochs=2, subset=200, directory=tmp_path / "hb")
    frame = tuning.results_frame(band)
    assert len(frame) >= 2 and (frame.status == "COMPLETED").all() and frame.epochs.max() <= 2


def test_a_decoder_model_is_searched_on_its_class_accuracy_by_default(tmp_path):
    """With the reconstruction decoder Keras logs the class accuracy as val_class_scores_accuracy;
    the default objective must mean it, not fail after the first trial has trained."""
    path = tmp_path / "tiny-decoder.toml"
    path.write_text(TINY_DIGITS_TOML.replace('lam = 3.0', 'lam = 3.0\ndecoder = true\ndecoder_units = [8, 16]')
                    + GRID.replace("depth = [2, 3]", ""))
    assert tuning.logged_objective(path) == "val_class_scores_accuracy"
    assert tuning.logged_objective(config_with({"lam": [1.0]})) == "val_accuracy"  # no decoder
    tuner = tuning.search(path, "grid", epochs=1, subset=200, directory=tmp_path / "tune")
    assert tuner.oracle.objective.name == "val_class_scores_accuracy"
    for frame in (tuning.results_frame(tuner), tuning.results_frame(tmp_path / "tune")):
        assert len(frame) == 2 and (frame.status == "COMPLETED").all()
        assert frame.val_class_scores_accuracy.between(0, 1).all()


def _cli(*args):
    return [sys.executable, "-m", "capszoo", "tune", *map(str, args)]


def _env():
    env = {k: v for k, v in os.environ.items() if not k.startswith("KERASTUNER_")}
    return {**env, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}


def _ended_trials(project):
    """The trials ``oracle.json`` records as ended (its ``end_order``), as folder names."""
    try:
        ended = json.loads((project / "oracle.json").read_text())["end_order"]
    except (OSError, json.JSONDecodeError, KeyError):  # not written yet, or being written right now
        return set()
    return {f"trial_{trial_id}" for trial_id in ended}


@pytest.mark.parametrize("args, message", [
    (["--rows", "iterations"], "--rows iterations: the config's [search] does not vary 'iterations' "
                               "(it varies lam, depth)"),
    (["--columns", "routing"], "--columns routing: the config's [search] does not vary 'routing'"),
    (["--rows", "lam"], "--rows and --columns both name 'lam'"),
])
def test_cli_table_axes_the_search_does_not_vary_are_refused_before_any_trial(search_config, tmp_path, capsys,
                                                                            args, message):
    # The table was left out silently, after the whole search had run.
    assert main(["tune", str(search_config), "--directory", str(tmp_path / "tune"), *args]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "tune").exists()
    with pytest.raises(SystemExit):
        main(["tune", str(search_config), "--rows", "lamda"])
    assert "argument --rows: invalid choice: 'lamda'" in capsys.readouterr().err


def test_cli_table_axes_default_to_depth_by_lam_where_searched():
    from capszoo.cli import _table_axes

    assert _table_axes(None, None, ["lam", "depth"]) == ("depth", "lam")
    assert _table_axes(None, None, ["routing", "lam"]) is None  # no table, as before: nothing was asked
    assert _table_axes("routing", None, ["routing", "lam"]) == ("routing", "lam")
    assert _table_axes(None, "iterations", ["iterations", "depth"]) == ("depth", "iterations")


def test_cli_search_killed_mid_run_resumes_where_it_stopped(search_config, tmp_path):
    project = tmp_path / "tune" / "tiny-search"
    args = [search_config, "--tuner", "grid", "--epochs", "1", "--subset", "300", "--directory", tmp_path / "tune"]
    first = subprocess.Popen(_cli(*args), cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                             text=True)
    deadline = time.time() + 900  # bounds a hang only: on a loaded 2-core machine the first trial took > 240 s
    # A trial is done once the oracle has saved it as ended: keras-tuner writes trial.json first and
    # oracle.json after, and a kill between the two leaves the trial to run again on resume.
    while "trial_00" not in _ended_trials(project):
        assert first.poll() is None and time.time() < deadline, "the search ended or hung before its first trial"
        time.sleep(0.1)
    first.send_signal(signal.SIGKILL)
    first.wait()
    done_before = _ended_trials(project)  # after the kill: a trial may end between the check and the kill
    kept = {t: (project / t / "trial.json").read_text() for t in done_before}
    assert len(done_before) < 4

    refused = subprocess.run(_cli(*args), cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=240)
    assert refused.returncode == 2 and "already holds a search: pass resume=True (--resume)" in refused.stderr
    second = subprocess.run(_cli(*args, "--resume", "--csv", tmp_path / "trials.csv"), cwd=tmp_path, env=_env(),
                            capture_output=True, text=True, timeout=400)
    assert second.returncode == 0, second.stderr[-2000:]
    ran_again = [line for line in second.stdout.splitlines() if line.startswith("trial:")]
    assert len(ran_again) == 4 - len(done_before)  # finished trials are not run again
    assert all((project / t / "trial.json").read_text() == text for t, text in kept.items())
    frame = pd.read_csv(tmp_path / "trials.csv")
    assert len(frame) == 4 and (frame.status == "COMPLETED").all()
    assert "| depth \\ lam | 0.001 | 3 |" in second.stdout


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_distributed_search_with_a_chief_and_two_workers(search_config, tmp_path):
    oracle = f"127.0.0.1:{_free_port()}"
    args = [search_config, "--tuner", "grid", "--epochs", "1", "--subset", "200", "--directory", tmp_path / "tune",
            "--distributed"]
    chief = subprocess.Popen(_cli(*args, "chief", "--oracle", oracle, "--csv", tmp_path / "all.csv"), cwd=tmp_path,
                             env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    workers = [subprocess.Popen(_cli(*args, "worker", "--oracle", oracle, "--tuner-id", f"worker{i}"), cwd=tmp_path,
                                env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for i in range(2)]
    processes = [chief, *workers]
    try:
        outputs = [p.communicate(timeout=420)[0] for p in processes]
    finally:
        for p in processes:  # keras-tuner's processes may not exit by themselves: never leave one behind
            if p.poll() is None:
                p.kill()
                p.wait()
    assert [p.returncode for p in processes] == [0, 0, 0], outputs
    trials = [line.split(" -> ")[0] for out in outputs[1:] for line in out.splitlines() if line.startswith("trial:")]
    assert len(trials) == 4 and len(set(trials)) == 4  # every grid point once, spread over the workers
    frame = pd.read_csv(tmp_path / "all.csv")  # the chief's results frame
    assert len(frame) == 4 and (frame.status == "COMPLETED").all()
    assert sorted(zip(frame.lam, frame.depth, strict=True)) == [(0.001, 2), (0.001, 3), (3.0, 2), (3.0, 3)]
