import json
import re
import shutil
from pathlib import Path

import keras
import numpy as np
import pytest

import capszoo
from capszoo import config as config_module
from capszoo import zoo
from capszoo.cli import main
from capszoo.training import TrainingError, learning_rate, train, warm_start_from_zoo


def test_list_models_names_patterns_and_frame():
    names = capszoo.list_models()
    assert {"ara-digits", "dra-digits", "ara-mnist", "dra-mnist"} <= set(names)
    assert all(n.startswith("ara") for n in capszoo.list_models("ara*"))
    frame = capszoo.list_models("*-mnist", as_frame=True)
    assert list(frame.columns) == ["name", "dataset", "depth", "routing", "lam", "iterations", "params", "trained",
                                   "test_accuracy"]
    ara = frame.set_index("name").loc["ara-mnist"]
    assert (ara.dataset, ara.depth, ara.routing, ara.lam) == ("mnist", 2, "adaptive_lambda", 3.0)
    assert np.isnan(ara.iterations) or ara.iterations is None
    # patterns are spelt as names are: 'ARA*' and '*fashion_mnist' matched nothing
    assert capszoo.list_models("ARA*") == capszoo.list_models("ara*")
    assert capszoo.list_models("*fashion_mnist") == capszoo.list_models("*fashion-mnist") != []
    assert capszoo.list_models("[ad]ra-mnist") == ["ara-mnist", "dra-mnist"]


ZOO_DATASETS = {"digits": "digits", "mnist": "mnist", "fashion-mnist": "fashion_mnist", "cifar10": "cifar10",
                "svhn": "svhn_cropped"}
ZOO_FAMILIES = {"ara": ("adaptive_lambda", 2), "dra": ("dynamic", 2), "uniform": ("uniform", 2),
                "ara3": ("adaptive_lambda", 3), "ara4": ("adaptive_lambda", 4), "dra3": ("dynamic", 3),
                "dra4": ("dynamic", 4)}


def test_every_zoo_entry_exists_and_matches_its_name():
    expected = {f"{family}-{dataset}" for family in ZOO_FAMILIES for dataset in ZOO_DATASETS}
    assert set(capszoo.list_models()) == expected
    for name in expected:
        family, dataset = name.split("-", 1)
        config, (routing, depth) = config_module.load_config(name), ZOO_FAMILIES[family]
        assert (config.data.dataset, config.model.routing, config.model.depth) == \
            (ZOO_DATASETS[dataset], routing, depth), name
        assert config.model.iterations == 3 or routing != "dynamic", name
        # the paper shifts CIFAR-10 and SVHN; ara-mnist and dra-fashion-mnist also take Sabour et al.'s
        # MNIST shift, ara-fashion-mnist 1 px of it, chosen on held-out data (docs/zoo-training.md)
        shifted = dataset in ("cifar10", "svhn") or name in ("ara-mnist", "dra-fashion-mnist")
        shift = 1 if name == "ara-fashion-mnist" else 2 if shifted else 0
        assert config.data.shift_pixels == shift, name
        if dataset != "digits":  # the paper's architecture and recipe
            defaults = config_module.ModelConfig(input_shape=config.model.input_shape)
            assert (config.model.conv_filters, config.model.primary_types) == (256, 32), name
            assert config.model.capsules == {2: (10,), 3: (256, 10), 4: (256, 32, 10)}[depth], name
            assert config.model.primary_capsules == defaults.primary_capsules
            # decay and length chosen on held-out data (docs/zoo-training.md)
            decay = 0.97 if name in ("dra-fashion-mnist", "ara-fashion-mnist") else 0.95
            assert (config.training.batch_size, config.training.learning_rate, config.training.lr_decay) == \
                (128, 1e-3, decay), name
            assert name != "ara-fashion-mnist" or config.training.epochs == 80


def test_every_published_entry_matches_its_recipe_and_card():
    """saved_models/: one weights file per entry, at most 35 MB, that its card and zoo config describe."""
    folder = zoo.source_saved_models()
    published = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("_"))
    assert {"ara-digits", "dra-mnist", "ara-cifar10"} <= set(published)
    for name in published:
        card = json.loads((folder / name / "card.json").read_text())
        weights = folder / name / card["weights_file"]
        assert {p.name for p in (folder / name).iterdir()} == {"card.json", "model.weights.h5"}, name
        assert card["config_sha256"] == config_module.load_config(name).sha256(), name
        assert card["weights_bytes"] == weights.stat().st_size <= 35_000_000, name
        assert card["weights_sha256"] == zoo.sha256_file(weights), name
        assert card["params"] == config_module.load_config(name).model.param_count(), name
        assert 0.0 <= card["test_accuracy"] <= 1.0 and card["epochs"] <= card.get("epochs_planned", card["epochs"])


def installed_from_a_wheel(monkeypatch, bundle):
    """The layout a pip-installed capszoo has: no source checkout, the package's saved_models
    holding every card but only ara-digits' weights (pyproject's package-data), as ``bundle``."""
    source = zoo.source_saved_models()
    for card in source.glob(f"*/{zoo.CARD_FILE}"):
        (bundle / card.parent.name).mkdir(parents=True)
        shutil.copy(card, bundle / card.parent.name / zoo.CARD_FILE)
    shutil.copy(source / "ara-digits" / zoo.WEIGHTS_FILE, bundle / "ara-digits" / zoo.WEIGHTS_FILE)
    monkeypatch.setattr(zoo, "source_saved_models", lambda: None)
    monkeypatch.setattr(zoo, "bundled_saved_models", lambda: bundle)
    monkeypatch.delenv(zoo.ENV_WEIGHTS_DIR, raising=False)


def test_an_installed_wheel_knows_every_trained_entry_and_where_its_weights_go(monkeypatch, tmp_path):
    """A wheel used to bundle ara-digits' card alone, so `capszoo.load("ara-cifar10")` said the
    entry was "not trained yet: train it", list_models(trained_only=True) gave ['ara-digits'] and
    `capszoo card ara-mnist` failed. Every card ships now; the weights stay a download."""
    source = zoo.source_saved_models()
    installed_from_a_wheel(monkeypatch, tmp_path / "bundle")
    published = sorted(p.parent.name for p in source.glob(f"*/{zoo.CARD_FILE}"))
    assert capszoo.list_models(trained_only=True) == published
    assert capszoo.card("dra-mnist") == json.loads((source / "dra-mnist" / zoo.CARD_FILE).read_text())
    assert capszoo.load("ara-digits", compile=False).count_params() == capszoo.card("ara-digits")["params"]
    card = capszoo.card("dra-digits")
    with pytest.raises(ValueError, match=re.escape(
            f"zoo entry 'dra-digits' is trained ({card['test_accuracy']:.2%} test accuracy on its card) but its "
            f"weights are not on this machine (looked for {tmp_path / 'bundle' / 'dra-digits' / 'model.weights.h5'})"
            f" and its card has no url: a pip-installed capszoo holds only the demo's weights. Put model.weights.h5 "
            f"(sha256 {card['weights_sha256'][:16]}...), from saved_models/dra-digits/ of the capszoo repository, "
            f"in $CAPSZOO_WEIGHTS_DIR/dra-digits/, or pass weights=PATH_OR_URL")):
        capszoo.load("dra-digits")
    # a $CAPSZOO_WEIGHTS_DIR that is no folder (misspelt, or the weights file itself) is named
    for unusable in (tmp_path / "no-such-folder", tmp_path / "bundle" / "ara-digits" / zoo.WEIGHTS_FILE):
        monkeypatch.setenv(zoo.ENV_WEIGHTS_DIR, str(unusable))
        with pytest.raises(ValueError, match=re.escape(f"; $CAPSZOO_WEIGHTS_DIR is set to {unusable}, which is not a "
                                                       "folder) and its card has no url")):
            capszoo.load("dra-digits")
    # the weights file alone in $CAPSZOO_WEIGHTS_DIR/NAME/ is checked against the bundled card
    monkeypatch.setenv(zoo.ENV_WEIGHTS_DIR, str(tmp_path / "downloads"))
    (tmp_path / "downloads" / "dra-digits").mkdir(parents=True)
    shutil.copy(source / "uniform-digits" / zoo.WEIGHTS_FILE, tmp_path / "downloads" / "dra-digits")
    with pytest.raises(ValueError, match="weights .*downloads/dra-digits/model.weights.h5 do not match the card of"):
        capszoo.load("dra-digits")  # same architecture, other weights: refused by the sha256
    shutil.copy(source / "dra-digits" / zoo.WEIGHTS_FILE, tmp_path / "downloads" / "dra-digits")
    loaded = capszoo.load("dra-digits", compile=False)
    reference = capszoo.load("dra-digits", weights=source / "dra-digits" / zoo.WEIGHTS_FILE, compile=False)
    for ours, theirs in zip(loaded.get_weights(), reference.get_weights(), strict=True):
        np.testing.assert_array_equal(ours, theirs)


def test_the_wheel_holds_every_config_and_card_and_the_demo_weights_only(tmp_path):
    """What pyproject's package-data puts in a wheel, built from a copy of the tree (the weights
    stood in for by small files, so that a wrongly included one shows without 300 MB copied)."""
    import subprocess
    import sys
    import zipfile

    root = Path(__file__).resolve().parents[1]
    tree = tmp_path / "tree"
    shutil.copytree(root / "capszoo", tree / "capszoo", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(root / "zoo_configs", tree / "zoo_configs")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(root / name, tree / name)
    for card in (root / "saved_models").glob(f"*/{zoo.CARD_FILE}"):
        (tree / "saved_models" / card.parent.name).mkdir(parents=True)
        shutil.copy(card, tree / "saved_models" / card.parent.name / zoo.CARD_FILE)
        (tree / "saved_models" / card.parent.name / zoo.WEIGHTS_FILE).write_bytes(b"stand-in")
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(tmp_path / "dist"), str(tree)], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr[-2000:]
    (wheel,) = (tmp_path / "dist").glob("capszoo-*.whl")
    files = set(zipfile.ZipFile(wheel).namelist())
    configs = {f"capszoo/zoo_configs/{p.name}" for p in (root / "zoo_configs").glob("*.toml")}
    cards = {f"capszoo/saved_models/{p.parent.name}/card.json" for p in (root / "saved_models").glob("*/card.json")}
    assert len(configs) == len(zoo.zoo_names()) and configs <= files
    assert len(cards) >= 15 and cards <= files
    assert {f for f in files if f.endswith(".h5")} == {"capszoo/saved_models/ara-digits/model.weights.h5"}


def test_list_models_frame_gives_params_of_untrained_entries():
    frame = capszoo.list_models("*4-cifar10", as_frame=True).set_index("name")
    assert frame.loc["ara4-cifar10", "params"] == 74_659_072
    assert frame.loc["dra4-cifar10", "iterations"] == 3 and not frame.trained.any()


def test_unknown_and_untrained_entries(monkeypatch, tmp_path):
    with pytest.raises(ValueError, match="unknown zoo entry 'ara-mnsit'.*did you mean ara-mnist"):
        capszoo.load("ara-mnsit")
    with pytest.raises(ValueError, match="empty zoo entry name ''"):
        capszoo.load("")
    monkeypatch.setattr(zoo, "source_saved_models", lambda: tmp_path)  # nothing published there
    with pytest.raises(ValueError, match="'dra-mnist' is not trained yet: train it with `capszoo train dra-mnist`"):
        capszoo.load("dra-mnist")
    assert capszoo.load("dra-mnist", weights=None).count_params() == 6_804_224


def test_a_folder_named_like_an_entry_does_not_shadow_it(monkeypatch, tmp_path, capsys):
    from capszoo.runs import load_trained

    monkeypatch.chdir(tmp_path)
    (tmp_path / "ara-digits").mkdir()  # say, where a user keeps the entry's predictions
    assert capszoo.load("ara-digits", weights=None, compile=False).count_params() == 1_406_208
    model, config = load_trained("ara-digits")  # what eval, predict and export load
    assert config.name == "ara-digits" and model.count_params() == 1_406_208
    with pytest.raises(ValueError, match="ara-digits is not a run folder: it has no config.toml"):
        load_trained("./ara-digits")
    assert main(["card", "ara-digits"]) == 0 and '"test_accuracy"' in capsys.readouterr().out


@pytest.mark.parametrize("call, message", [
    (lambda: capszoo.load(3), "capszoo.load: name must be a zoo entry name such as 'ara-digits', got 3"),
    (lambda: capszoo.load("ara-digits", weights=3), r"weights must be 'zoo', None, or a path or URL .* got 3"),
    (lambda: capszoo.load("ara-digits", compile="yes"), "capszoo.load: compile must be True or False, got 'yes'"),
    (lambda: capszoo.list_models(pattern=3), "pattern must be a shell pattern such as 'ara\\*', got 3"),
    (lambda: capszoo.list_models(trained_only="no"), "capszoo.list_models: trained_only must be True or False"),
    (lambda: capszoo.list_models(as_frame=1), "capszoo.list_models: as_frame must be True or False, got 1"),
], ids=["name", "weights", "compile", "pattern", "trained_only", "as_frame"])
def test_load_and_list_models_name_arguments_of_the_wrong_type(call, message):
    with pytest.raises(TypeError, match=message):
        call()


def _private_zoo_paths(monkeypatch, root):
    configs = root / "zoo_configs"
    monkeypatch.setattr(config_module, "zoo_configs_dir", lambda: configs)
    monkeypatch.setattr(zoo, "source_saved_models", lambda: root / "saved_models")
    monkeypatch.delenv(zoo.ENV_WEIGHTS_DIR, raising=False)
    return configs


@pytest.fixture(scope="module")
def _published_tiny_zoo(tmp_path_factory):
    """The tiny digits entry trained for its two epochs and published, once per module: each
    test gets a copy of the folder (training and publishing took 2-5 s of every test's setup)."""
    from tests.conftest import TINY_DIGITS_TOML

    root = tmp_path_factory.mktemp("private-zoo")
    with pytest.MonkeyPatch.context() as monkeypatch:
        configs = _private_zoo_paths(monkeypatch, root)
        configs.mkdir()
        (configs / "tiny-digits.toml").write_text(TINY_DIGITS_TOML)
        _, metrics = train("tiny-digits", out_dir=root / "run", verbose=0)
        published = zoo.publish(root / "run")
    return root, metrics, published.relative_to(root)


@pytest.fixture
def private_zoo(tmp_path, monkeypatch, _published_tiny_zoo):
    """A zoo whose only entry is the tiny digits config, trained for two epochs and published
    (a fresh copy in this test's tmp_path), with the trained model rebuilt from its weights."""
    from capszoo.config import load_config
    from capszoo.training import build_model, compile_model

    root, metrics, published = _published_tiny_zoo
    for item in ("zoo_configs", "saved_models", "run"):
        shutil.copytree(root / item, tmp_path / item)
    _private_zoo_paths(monkeypatch, tmp_path)
    config = load_config(tmp_path / "run" / "config.toml")
    model = build_model(config, compile=False)
    model.load_weights(tmp_path / "run" / "model.weights.h5")  # weights only: compiled after
    compile_model(model, config)
    return tmp_path, model, json.loads(json.dumps(metrics)), tmp_path / published


def test_publish_writes_weights_and_a_measured_card(private_zoo):
    tmp_path, model, metrics, published = private_zoo
    assert published == tmp_path / "saved_models" / "tiny-digits"
    card = json.loads((published / "card.json").read_text())
    assert card["test_accuracy"] == metrics["test_accuracy"] and card["epochs"] == 2
    assert "test_accuracy_at_training" not in card  # measured again here: the same figure
    assert card["evaluated_on"]["versions"]["backend"] == keras.backend.backend()
    assert card["epochs_planned"] == 2 and card["stopped_by_time_limit"] is False
    assert card["weights_sha256"] == zoo.sha256_file(published / "model.weights.h5")
    assert card["weights_bytes"] == (published / "model.weights.h5").stat().st_size
    assert card["params"] == model.count_params() and card["dataset"]["kind"] == "sklearn"
    assert card["dataset"]["name"] == "digits"
    import h5py

    with h5py.File(published / "model.weights.h5") as f:  # model weights only: no optimizer moments
        assert "optimizer" not in f
    assert {"cpu", "cpu_count"} <= set(card["hardware"]) and card["versions"]["keras"]



def test_publishing_from_an_installed_capszoo_goes_where_load_looks(private_zoo, monkeypatch):
    """Installed from a wheel, publish wrote ./saved_models/NAME, which load never reads."""
    tmp_path, model, _, _ = private_zoo
    monkeypatch.setattr(zoo, "source_saved_models", lambda: None)
    monkeypatch.setattr(zoo, "bundled_saved_models", lambda: tmp_path / "bundle")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=r"this capszoo is installed, not a source checkout: set \$CAPSZOO_WEIGHTS_DIR "
                                         r"to the folder capszoo.load should read 'tiny-digits' from"):
        zoo.publish(tmp_path / "run")
    assert not (tmp_path / "saved_models" / "tiny-digits" / "publishing.model.weights.h5").exists()
    monkeypatch.setenv(zoo.ENV_WEIGHTS_DIR, str(tmp_path / "mine"))
    assert zoo.publish(tmp_path / "run") == tmp_path / "mine" / "tiny-digits"
    loaded = capszoo.load("tiny-digits", compile=False)
    for ours, theirs in zip(loaded.get_weights(), model.get_weights(), strict=True):
        np.testing.assert_array_equal(ours, theirs)


def test_publish_measures_the_weights_here_not_only_where_they_trained(private_zoo):
    """A run trained elsewhere (a GPU with JAX): the card's accuracy is measured on this machine."""
    tmp_path, _, metrics, published = private_zoo
    here = json.loads((published / "card.json").read_text())["test_accuracy"]
    elsewhere = {**metrics, "test_accuracy": 0.01234, "versions": {**metrics["versions"], "backend": "jax"}}
    (tmp_path / "run" / "metrics.json").write_text(json.dumps(elsewhere))
    card = json.loads((zoo.publish(tmp_path / "run", dest=tmp_path / "again") / "card.json").read_text())
    assert card["test_accuracy"] == here and card["test_accuracy_at_training"] == 0.01234
    assert card["versions"]["backend"] == "jax"  # the training run's
    assert card["evaluated_on"]["versions"]["backend"] == keras.backend.backend()


def test_a_card_names_an_offline_data_file_not_the_training_machines_folder(private_zoo):
    tmp_path, _, metrics, _ = private_zoo
    offline = {"name": "digits", "kind": "npz", "path": "/data/on/the/gpu/box/digits.npz", "sha256": "ab" * 32,
               "layout": "arrays"}
    (tmp_path / "run" / "metrics.json").write_text(json.dumps({**metrics, "dataset": offline}))
    card = json.loads((zoo.publish(tmp_path / "run", dest=tmp_path / "again") / "card.json").read_text())
    assert card["dataset"] == {"name": "digits", "kind": "npz", "file": "digits.npz", "sha256": "ab" * 32,
                               "layout": "arrays"}
    assert "/data/on" not in json.dumps(card)


def test_a_resumed_runs_card_adds_up_every_run_behind_its_weights(private_zoo):
    tmp_path = private_zoo[0]
    run = tmp_path / "resumed"
    _, first = train("tiny-digits", out_dir=run, time_limit=1e-3, verbose=0)  # 1 of its 2 epochs
    _, second = train("tiny-digits", out_dir=run, resume=True, verbose=0)
    kept = json.loads((run / "metrics-epoch-0001.json").read_text())  # the first run's metrics survive
    assert (kept["epochs"], kept["wall_time_s"]) == (1, first["wall_time_s"]) and second["resumed_from_epoch"] == 1
    card = json.loads((zoo.publish(run, dest=tmp_path / "card-a") / "card.json").read_text())
    assert [part["epochs"] for part in card["training_runs"]] == [[0, 1], [1, 2]] and card["epochs"] == 2
    assert card["wall_time_s"] == pytest.approx(first["wall_time_s"] + second["wall_time_s"], abs=0.11)
    assert card["images_per_s"] == pytest.approx(2 * card["train_examples"] / card["wall_time_s"], rel=1e-3)
    assert "wall_time_epochs" not in card  # the total covers every epoch
    # A run killed before it wrote its metrics leaves a gap, and the card says how many epochs the time covers.
    (run / "metrics-epoch-0001.json").unlink()
    card = json.loads((zoo.publish(run, dest=tmp_path / "card-b") / "card.json").read_text())
    assert [part["epochs"] for part in card["training_runs"]] == [[1, 2]] and card["wall_time_epochs"] == 1
    assert card["wall_time_s"] == second["wall_time_s"]


def test_trained_how_names_each_machine_a_resumed_run_used():
    cpu = {"hardware": {"cpu": "AMD EPYC", "cpu_count": 2, "accelerators": []}, "versions": {"backend": "tensorflow"}}
    gpu = {"hardware": {"cpu": "x", "cpu_count": 16, "accelerators": ["NVIDIA H100"]}, "versions": {"backend": "jax"}}
    card = {"epochs": 25, "epochs_planned": 30, **cpu, "training_runs": [gpu, cpu, cpu]}
    assert zoo.trained_how(card) == "25 of 30 epochs, NVIDIA H100 (JAX) then 2 × AMD EPYC"
    assert zoo.trained_how({**card, "training_runs": [cpu, cpu], "training_precision": "mixed_bfloat16"}) == \
        "25 of 30 epochs, 2 × AMD EPYC, mixed_bfloat16"
    assert zoo.trained_how({**card, "training_runs": [gpu, cpu, gpu]}) == \
        "25 of 30 epochs, NVIDIA H100 (JAX) then 2 × AMD EPYC then NVIDIA H100 (JAX)"  # in turn, as they ran
    assert zoo.trained_how({"epochs": 30, **gpu}) == "30 epochs, NVIDIA H100 (JAX)"  # a card from before training_runs
    assert zoo.trained_how({**card, "training_runs": [cpu], "training_ema_momentum": 0.999}) == \
        "25 of 30 epochs, 2 × AMD EPYC, weights averaged (EMA 0.999)"


def test_load_gives_the_trained_model_and_its_accuracy(private_zoo):
    _, model, metrics, _ = private_zoo
    loaded = capszoo.load("tiny-digits")
    x = np.random.default_rng(0).random((3, 12, 12, 1)).astype("float32")
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6)
    from capszoo.training import evaluate

    assert evaluate(loaded, "tiny-digits")["accuracy"] == pytest.approx(metrics["test_accuracy"], abs=1e-6)
    frame = capszoo.list_models(trained_only=True, as_frame=True)
    assert frame.name.tolist() == ["tiny-digits"] and frame.trained.all()


class _Batches(keras.utils.PyDataset):
    def __init__(self, x, y, size):
        super().__init__()
        self.x, self.y, self.size = x, y, size

    def __len__(self):
        return len(self.x) // self.size

    def __getitem__(self, k):
        part = slice(k * self.size, (k + 1) * self.size)
        return self.x[part], self.y[part]


def test_a_zoo_model_measures_one_hot_labels_from_a_stream_as_it_measures_ids():
    # A stream passes CapsNet's label check; the compiled accuracy itself must read one-hot
    # rows. With Keras' SparseCategoricalAccuracy, batches of 10 (= classes) broadcast them and
    # ara-digits scored 7 % instead of 99.7 %.
    from capszoo.data import load_splits, scale_and_resize_numpy

    config = config_module.load_config("ara-digits")
    x, y = load_splits(config).test
    x = scale_and_resize_numpy(x[:60], config.data)
    model = capszoo.load("ara-digits")
    by_id = model.evaluate(_Batches(x, y[:60], 10), verbose=0, return_dict=True)
    by_row = model.evaluate(_Batches(x, np.eye(10, dtype="float32")[y[:60]], 10), verbose=0, return_dict=True)
    assert by_id["accuracy"] > 0.9
    assert by_row == pytest.approx(by_id, rel=1e-6)


def test_tampered_weights_are_refused(private_zoo):
    _, _, _, published = private_zoo
    weights = published / "model.weights.h5"
    data = bytearray(weights.read_bytes())
    data[-100] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="do not match the card of 'tiny-digits': sha256"):
        capszoo.load("tiny-digits")


@pytest.mark.parametrize("text, problem", [
    ('{"name": "ara-digits", "config_sha', r"is not valid JSON \(Unterminated string"),
    ('<<<<<<< HEAD\n{}', "is not valid JSON"),
    (b'{"name": "\xff"}', "is not valid JSON"),
    ('["ara-digits"]', "is not a JSON object but list"),
    ('{"name": "ara-digits", "test_accuracy": 0.99}', "lacks config_sha256, weights_sha256, so it was not written"),
], ids=["truncated", "conflict-markers", "not-utf8", "a-list", "keys-missing"])
def test_a_corrupt_card_gets_one_error_naming_its_file(monkeypatch, tmp_path, capsys, text, problem):
    card = tmp_path / "ara-digits" / "card.json"
    card.parent.mkdir()
    card.write_bytes(text if isinstance(text, bytes) else text.encode())
    monkeypatch.setenv(zoo.ENV_WEIGHTS_DIR, str(tmp_path))  # looked in before saved_models/
    message = re.escape(f"the model card {card} of 'ara-digits' ") + problem
    for call in (lambda: capszoo.load("ara-digits"), lambda: capszoo.list_models("ara-*", trained_only=True)):
        with pytest.raises(ValueError, match=message):
            call()
    assert main(["card", "ara-digits"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"capszoo card: error: the model card {card} ") and err.count("\n") == 1


def test_weights_from_the_card_url_are_fetched_and_checked(private_zoo, monkeypatch, tmp_path_factory, capsys):
    _, _, _, published = private_zoo
    monkeypatch.setattr(zoo, "FETCH_CACHE_DIR", str(tmp_path_factory.mktemp("keras-cache")))
    elsewhere = tmp_path_factory.mktemp("server") / "tiny.weights.h5"
    shutil.move(published / "model.weights.h5", elsewhere)
    card = json.loads((published / "card.json").read_text())
    card["url"] = elsewhere.as_uri()  # file:// URL, fetched with keras.utils.get_file
    (published / "card.json").write_text(json.dumps(card))
    # Keras' "Downloading data from" line used to land in stdout, ahead of `capszoo eval`'s JSON.
    assert main(["eval", "tiny-digits"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["model"] == "tiny-digits" and f"Downloading data from {card['url']}" in err
    assert capszoo.load("tiny-digits").count_params() == card["params"]  # from the cache now


def test_two_weight_urls_ending_in_the_same_file_name_are_two_files(private_zoo, monkeypatch, tmp_path_factory):
    # Cached under the URL's file name alone, the second URL got the first one's weights, silently.
    _, _, _, published = private_zoo
    monkeypatch.setattr(zoo, "FETCH_CACHE_DIR", str(tmp_path_factory.mktemp("keras-cache")))
    trained = tmp_path_factory.mktemp("server-a") / "model.weights.h5"
    shutil.copy(published / "model.weights.h5", trained)
    fresh_model = capszoo.load("tiny-digits", weights=None, compile=False)
    fresh = tmp_path_factory.mktemp("server-b") / "model.weights.h5"
    fresh_model.save_weights(fresh)
    published_model = capszoo.load("tiny-digits", compile=False)

    def same(a, b):
        return all(np.array_equal(x, y) for x, y in zip(a.get_weights(), b.get_weights(), strict=True))

    assert not same(fresh_model, published_model)
    for path, expected in ((trained, published_model), (fresh, fresh_model), (trained, published_model)):
        assert same(capszoo.load("tiny-digits", weights=path.as_uri(), compile=False), expected), path


def test_a_sha256_pin_loads_the_weights_it_names_and_refuses_others(private_zoo, monkeypatch, tmp_path_factory):
    _, _, _, published = private_zoo
    monkeypatch.setattr(zoo, "FETCH_CACHE_DIR", str(tmp_path_factory.mktemp("keras-cache")))
    weights = published / "model.weights.h5"
    pinned = capszoo.card("tiny-digits")["weights_sha256"]
    assert zoo.sha256_file(weights) == pinned
    expected = capszoo.load("tiny-digits", compile=False).get_weights()
    for given in ({}, {"weights": str(weights)}, {"weights": weights.as_uri()}):
        for pin in (pinned, pinned[:8].upper()):
            loaded = capszoo.load("tiny-digits", sha256=pin, compile=False, **given).get_weights()
            assert all(np.array_equal(a, b) for a, b in zip(loaded, expected, strict=True)), (given, pin)
    other = tmp_path_factory.mktemp("other") / "model.weights.h5"
    capszoo.load("tiny-digits", weights=None, compile=False).save_weights(other)
    other_sha = zoo.sha256_file(other)
    with pytest.raises(ValueError, match=re.escape(f"weights {other} have sha256 {other_sha[:16]}..., not the "
                                                   f"{pinned[:16]}... pinned by sha256=")):
        capszoo.load("tiny-digits", weights=str(other), sha256=pinned)
    with pytest.raises(ValueError, match=r"the Keras cache: delete it to fetch the URL again\) have sha256"):
        capszoo.load("tiny-digits", weights=other.as_uri(), sha256=pinned)
    # The entry published again (new weights and card): the pin refuses them instead of loading them.
    shutil.copy(other, weights)
    card = json.loads((published / "card.json").read_text())
    (published / "card.json").write_text(json.dumps({**card, "weights_sha256": other_sha}))
    assert capszoo.load("tiny-digits", compile=False).count_params() == card["params"]
    with pytest.raises(ValueError, match=re.escape(f"zoo entry 'tiny-digits' now has weights {other_sha[:16]}... "
                                                   f"(its card), not the {pinned[:12]}... pinned by sha256=")):
        capszoo.load("tiny-digits", sha256=pinned[:12])


def test_a_loaded_model_knows_its_entry_for_class_names_and_evaluate(private_zoo):
    from capszoo.training import evaluate

    model = capszoo.load("tiny-digits")
    assert model.zoo_entry == "tiny-digits"
    assert capszoo.class_names(model) == capszoo.class_names("tiny-digits")
    assert evaluate(model) == evaluate(model, "tiny-digits")
    built = capszoo.CapsNet(model.model_config)
    for call in (lambda: capszoo.class_names(built), lambda: evaluate(built)):
        with pytest.raises(ValueError, match=re.escape(f"model {built.name!r} was not loaded with capszoo.load, so "
                                                       "its dataset and recipe are not known: give its zoo entry")):
            call()


def test_load_points_a_run_folder_to_load_trained(private_zoo, monkeypatch):
    # It was "unknown zoo entry 'run'" followed by every entry's name.
    tmp_path = private_zoo[0]
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=re.escape("capszoo.load takes a zoo entry name, and run is a run folder: "
                                                   "capszoo.runs.load_trained('run') returns its (model, config)")):
        capszoo.load("run")
    from capszoo.runs import load_trained

    model, config = load_trained("run")
    assert config.name == "tiny-digits" and model.count_params() == capszoo.load("tiny-digits").count_params()


@pytest.mark.parametrize("sha256, weights, error, message", [
    ("abc", "zoo", ValueError, "sha256 must be the weights' SHA-256 in hex, or its first 8 or more digits"),
    ("g" * 64, "zoo", ValueError, "sha256 must be the weights' SHA-256 in hex"),
    (12345678, "zoo", TypeError, "sha256 must be a string of hex digits, got 12345678"),
    ("0" * 64, None, ValueError, "sha256 pins the weights to load, and weights=None loads none"),
])
def test_a_sha256_pin_that_cannot_pin_is_refused(sha256, weights, error, message):
    with pytest.raises(error, match=re.escape(message)):
        capszoo.load("ara-digits", weights=weights, sha256=sha256)


@pytest.mark.parametrize("weights, message", [
    ("", "empty weights path ''"),
    ("s3://bucket/model.weights.h5", "weights s3://bucket/model.weights.h5: a URL, not a file"),
    (".", "weights . is a folder, not a .weights.h5 file"),
])
def test_weights_that_are_no_file_get_their_own_error(private_zoo, weights, message):
    # They were all "weights file X does not exist", with the URL's "//" collapsed and "" read as ".".
    with pytest.raises(ValueError, match=re.escape(message)):
        capszoo.load("tiny-digits", weights=weights)


def test_weights_from_another_architecture_are_refused(private_zoo):
    _, _, _, published = private_zoo
    other = capszoo.CapsNet2(input_shape=(12, 12, 1), conv_filters=4, conv_kernel_size=3, primary_types=2,
                             primary_dim=4, primary_kernel_size=3, routing="uniform")
    path = published.parent / "other.weights.h5"
    other.save_weights(path)
    with pytest.raises(ValueError, match="cannot load weights .*other.weights.h5 into") as refused:
        capszoo.load("tiny-digits", weights=str(path))
    # It ended in Keras' dangling "Example error message for object <CapsuleLayer ...>:"; it now
    # names the arrays that differ, as the two files hold them.
    message = str(refused.value)
    assert "the file holds the weights of another architecture: " in message
    assert "conv/vars/0 is (3, 3, 1, 4) in the file, (3, 3, 1, 8) in the model" in message
    assert message.endswith("(5 of 5 weight arrays differ)")


def test_a_checkpoint_of_a_deeper_network_is_refused_naming_its_extra_layer(private_zoo):
    tmp_path, _, _, _ = private_zoo
    checkpoint = sorted((tmp_path / "run" / "checkpoints").glob("*.keras"))[-1]
    assert capszoo.load("tiny-digits", weights=str(checkpoint)).count_params() > 0  # same network: loads
    deeper = capszoo.load("tiny-digits", weights=None).model_config.replace(capsules=(6, 10), capsule_dims=(4, 4))
    other = capszoo.CapsNet(deeper)
    other.compile(optimizer=keras.optimizers.Adam(), loss=capszoo.MarginLoss())
    other.optimizer.build(other.trainable_variables)  # its slots are in the file, and not counted
    path = tmp_path / "deeper.keras"
    other.save(path)
    with pytest.raises(ValueError, match=re.escape(
            "the file holds the weights of another architecture: capsule_layers/capsule_layer/vars/0 is "
            "(64, 4, 6, 4) in the file, (64, 4, 10, 4) in the model; capsule_layers/capsule_layer_1/vars/0 "
            "(6, 4, 10, 4) is in the file only (2 of 6 weight arrays differ)")):
        capszoo.load("tiny-digits", weights=str(path))


def test_float16_weights_are_half_the_file_load_as_float32_and_keep_the_accuracy(private_zoo):
    import h5py

    tmp_path, model, metrics, published = private_zoo
    full_bytes = (published / "model.weights.h5").stat().st_size
    half = zoo.publish(tmp_path / "run", weights_dtype="float16")  # replaces the float32 entry
    assert half == published
    card = json.loads((half / "card.json").read_text())
    weights = half / "model.weights.h5"
    assert card["weights_dtype"] == "float16" and card["weights_sha256"] == zoo.sha256_file(weights)
    assert card["test_accuracy_float32"] == metrics["test_accuracy"] and "test_accuracy_at_training" not in card
    assert abs(card["test_accuracy"] - metrics["test_accuracy"]) <= 0.0005
    arrays = {}
    with h5py.File(weights) as f:
        f.visititems(lambda key, item: arrays.update({key: item[()]}) if isinstance(item, h5py.Dataset) else None)
    assert arrays and all(a.dtype == np.float16 for a in arrays.values())
    saved = full_bytes - card["weights_bytes"]  # the same HDF5 layout around half the bytes of data
    assert saved == pytest.approx(sum(w.nbytes for w in model.get_weights()) // 2, abs=2048)
    assert sorted(p.name for p in half.iterdir()) == ["card.json", "model.weights.h5"]  # nothing staged is left
    loaded = capszoo.load("tiny-digits")
    assert all(w.dtype == np.float32 for w in loaded.get_weights())
    for ours, theirs in zip(loaded.get_weights(), model.get_weights(), strict=True):  # the float16 rounding
        np.testing.assert_array_equal(ours, theirs.astype(np.float16).astype(np.float32))


def test_float16_weights_that_move_the_accuracy_are_refused_and_nothing_is_replaced(private_zoo, monkeypatch):
    from capszoo import training

    tmp_path, _, _, published = private_zoo
    before = (published / "model.weights.h5").read_bytes(), (published / "card.json").read_text()
    measured = iter([0.9000, 0.9010])  # the float16 file first, then the float32 weights: 0.10 points apart
    monkeypatch.setattr(training, "evaluate", lambda *a, **k: {"accuracy": next(measured), "loss": 0.1,
                                                               "examples": 359, "split": "test"})
    with pytest.raises(ValueError, match=r"float16 weights change tiny-digits's test accuracy by -0.10 points "
                                         r"\(0.9010 -> 0.9000\), more than the 0.05 allowed: publish it in float32"):
        zoo.publish(tmp_path / "run", weights_dtype="float16")
    assert ((published / "model.weights.h5").read_bytes(), (published / "card.json").read_text()) == before
    assert sorted(p.name for p in published.iterdir()) == ["card.json", "model.weights.h5"]
    with pytest.raises(ValueError, match="weights dtype must be one of 'float32', 'float16', got 'int8'"):
        zoo.publish(tmp_path / "run", weights_dtype="int8")


def test_publish_names_a_corrupt_metrics_file_and_replaces_nothing(private_zoo, capsys):
    tmp_path, _, _, published = private_zoo
    metrics, card = tmp_path / "run" / "metrics.json", (published / "card.json").read_text()
    cases = [('{"name": "tiny-di', r"is not valid JSON \(Unterminated string"), ("[]", "is not a JSON object but list")]
    for text, problem in cases:
        metrics.write_text(text)
        with pytest.raises(ValueError, match=re.escape(str(metrics)) + " " + problem):
            zoo.publish(tmp_path / "run")
        assert main(["publish", str(tmp_path / "run")]) == 2
        assert capsys.readouterr().err.startswith(f"capszoo publish: error: {metrics} ")
    assert (published / "card.json").read_text() == card


def test_publish_refuses_runs_of_another_recipe(private_zoo, tiny_config_path):
    tmp_path, _, _, _ = private_zoo
    train("tiny-digits", out_dir=tmp_path / "short", epochs=1, verbose=0)
    with pytest.raises(ValueError, match=r"did not train the recipe of zoo entry 'tiny-digits' \(config hashes differ"):
        zoo.publish(tmp_path / "short")
    # A config that is no entry read "unknown zoo entry 'other'; known: ..."; a missing folder and a
    # killed run both "is not a finished run".
    other = tmp_path / "other.toml"
    other.write_text(tiny_config_path.read_text())
    train(other, out_dir=tmp_path / "other-run", verbose=0)
    with pytest.raises(ValueError, match=re.escape(
            f"run {tmp_path / 'other-run'} trained the config 'other', which is not a zoo entry: publish takes a run "
            "of an entry's recipe (zoo_configs/NAME.toml), named with --name NAME when its config file is named "
            "otherwise")):
        zoo.publish(tmp_path / "other-run")
    assert zoo.publish(tmp_path / "other-run", name="tiny-digits", dest=tmp_path / "as-named").is_dir()
    with pytest.raises(ValueError, match=re.escape(f"run folder {tmp_path / 'nowhere'} does not exist")):
        zoo.publish(tmp_path / "nowhere")
    (tmp_path / "other-run" / "metrics.json").unlink()
    with pytest.raises(ValueError, match=re.escape(
            f"is not a finished run (needs metrics.json and model.weights.h5): finish it with `capszoo train "
            f"{tmp_path / 'other-run' / 'config.toml'} --resume --out {tmp_path / 'other-run'}`")):
        zoo.publish(tmp_path / "other-run")


def test_cli_list_card_and_eval_by_name(private_zoo, capsys):
    tmp_path, _, metrics, _ = private_zoo
    assert main(["list", "--trained"]) == 0
    assert "tiny-digits" in capsys.readouterr().out
    assert main(["card", "tiny-digits"]) == 0
    assert json.loads(capsys.readouterr().out)["test_accuracy"] == metrics["test_accuracy"]
    assert main(["eval", "tiny-digits"]) == 0
    assert json.loads(capsys.readouterr().out)["accuracy"] == pytest.approx(metrics["test_accuracy"], abs=1e-6)
    assert main(["card", "nope"]) == 2
    capsys.readouterr()
    assert main(["card", str(tmp_path / "run")]) == 2  # a run folder has no card: it is not an entry
    assert capsys.readouterr().err.startswith(f"capszoo card: error: unknown zoo entry '{tmp_path / 'run'}'")
    capsys.readouterr()
    assert main(["list", "--trained", "dra*"]) == 1  # nothing trained in this private zoo matches
    assert capsys.readouterr().err.strip() == ("capszoo list: no trained zoo entry matches 'dra*' "
                                               "(`capszoo list` shows them all)")
    assert main(["list", "zzz*"]) == 1 and "no zoo entry matches 'zzz*'" in capsys.readouterr().err


def test_cli_card_prints_the_card_readably(capsys):
    """`capszoo card` prints the bundled card with its text readable (λ, not the file's \\u03bb)."""
    assert main(["card", "ara-digits"]) == 0
    out = capsys.readouterr().out
    assert json.loads(out) == {k: v for k, v in zoo.read_card("ara-digits").items() if not k.startswith("_")}
    assert "λ = 3" in out and "\\u03bb" not in out


def test_card_is_the_python_side_of_capszoo_card(monkeypatch, tmp_path):
    card = capszoo.card("ara-digits")
    on_file = json.loads((Path(zoo.read_card("ara-digits")["_folder"]) / "card.json").read_text())
    assert card == on_file and card["weights_sha256"] == on_file["weights_sha256"]
    card["test_accuracy"] = 0.0  # a copy: the next call reads the file again
    assert capszoo.card("ara-digits")["test_accuracy"] == on_file["test_accuracy"]
    with pytest.raises(ValueError, match="unknown zoo entry 'ara-digts'.*did you mean ara-digits"):
        capszoo.card("ara-digts")  # read_card's None would read as "not trained"
    with pytest.raises(ValueError, match="zoo entry 'ara-svhn' is not trained yet: train it with `capszoo train "
                                         "ara-svhn`$"):
        capszoo.card("ara-svhn")


def test_bundled_demo_runs_and_writes_its_figure(tmp_path, capsys):
    if zoo.read_card("ara-digits") is None:
        pytest.fail("saved_models/ara-digits is not published: the README's demo needs it")
    out = tmp_path / "demo.png"
    assert main(["demo", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "test accuracy on the 359 held-out scikit-learn digits" in printed and "accuracy" in printed
    assert f"verified), trained {zoo.trained_how(zoo.read_card('ara-digits'))}\n" in printed
    assert out.stat().st_size > 10_000 and Path(out).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # One image per class, then the mistakes (the split's first eight were five 6s and two 2s; and
    # eight places showed classes 0-6 under a line saying "the first of each class").
    heading = re.search(r"\n(\d+) test images, the first of each class(, then the (\d+) mistakes?| \(no mistakes\)): ",
                        printed)
    assert heading, printed
    mistakes = int(heading[3] or 0)
    assert int(heading[1]) == 10 + mistakes and mistakes <= 2
    shown = printed[heading.end():].splitlines()[1:1 + int(heading[1])]
    labels = [int(line.split()[1]) for line in shown]
    assert labels[:10] == list(range(10)) and sum(line.endswith("wrong") for line in shown) == mistakes
    # A folder, or a name without a suffix: matplotlib wrote FOLDER.png / NAME.png while the demo
    # said it wrote FOLDER / NAME.
    for given, written in ((tmp_path, tmp_path / "capszoo-demo.png"), (tmp_path / "plain", tmp_path / "plain.png")):
        assert main(["demo", "--out", str(given), "--images", "2"]) == 0
        assert capsys.readouterr().out.endswith(f"\nwrote {written}\n") and written.read_bytes()[:4] == b"\x89PNG"


def test_continuing_a_published_entry_goes_on_from_its_card_with_a_fresh_optimizer(private_zoo):
    tmp_path = private_zoo[0]
    with pytest.raises(TrainingError, match="already been trained for 2 of 2 epochs: nothing to continue"):
        train("tiny-digits", out_dir=tmp_path / "refused", from_zoo=True, verbose=0)
    assert not (tmp_path / "refused").exists()
    _, first = train("tiny-digits", out_dir=tmp_path / "short", time_limit=1e-3, verbose=0)  # 1 of its 2 epochs
    card = json.loads((zoo.publish(tmp_path / "short") / "card.json").read_text())
    published = capszoo.load("tiny-digits", compile=False).get_weights()
    # What the continuation starts from: the published weights, and an optimizer that has taken no step.
    config = config_module.load_config("tiny-digits")
    assert warm_start_from_zoo(config, tmp_path / "seed") == 1
    seeded = keras.saving.load_model(tmp_path / "seed" / "checkpoints" / "epoch-0001.keras")
    assert all(np.array_equal(a, b) for a, b in zip(seeded.get_weights(), published, strict=True))
    assert int(keras.ops.convert_to_numpy(seeded.optimizer.iterations)) == 0
    with pytest.raises(TrainingError, match="already holds a run: continue it with --resume"):
        warm_start_from_zoo(config, tmp_path / "seed")
    # A card from before per-run pipelines names only its last run's, which the seeded metrics then take.
    card_path = tmp_path / "saved_models" / "tiny-digits" / "card.json"
    older = {**card, "data_pipeline": "numpy", "training_runs": [
        {k: v for k, v in part.items() if k != "data_pipeline"} for part in card["training_runs"]]}
    card_path.write_text(json.dumps(older))
    warm_start_from_zoo(config, tmp_path / "seed-older")
    assert json.loads((tmp_path / "seed-older" / "metrics-epoch-0001.json").read_text())["data_pipeline"] == "numpy"
    # Older still: no training_runs at all, the card its one run's account (8 committed cards).
    # Its "epochs" is a count; it was unpacked as a span, a TypeError out of `capszoo train --from-zoo`.
    oldest = {k: v for k, v in card.items() if k not in ("training_runs", "resumed_from_epoch")}
    card_path.write_text(json.dumps(oldest))
    assert warm_start_from_zoo(config, tmp_path / "seed-oldest") == 1
    seeded_run = json.loads((tmp_path / "seed-oldest" / "metrics-epoch-0001.json").read_text())
    assert (seeded_run["resumed_from_epoch"], seeded_run["epochs"]) == (0, 1)
    assert seeded_run["wall_time_s"] == card["wall_time_s"] and seeded_run["hardware"] == card["hardware"]
    card_path.write_text(json.dumps(card))

    run = tmp_path / "continued"
    _, metrics = train("tiny-digits", out_dir=run, from_zoo=True, verbose=0)
    assert (metrics["resumed_from_epoch"], metrics["epochs_this_run"], metrics["epochs"]) == (1, 1, 2)
    assert metrics["warm_starts"] == [{"epoch": 1, "weights_sha256": card["weights_sha256"],
                                       "optimizer": "fresh: the published weights carry no optimizer state"}]
    history = (run / "history.csv").read_text().splitlines()
    assert len(history) == 2 and history[1].split(",")[0] == "1"  # epoch 1 only, the schedule's second epoch
    lr = dict(zip(history[0].split(","), history[1].split(","), strict=True))["learning_rate"]
    assert float(lr) == pytest.approx(learning_rate(config, 1))
    again = json.loads((zoo.publish(run) / "card.json").read_text())
    assert [part["epochs"] for part in again["training_runs"]] == [[0, 1], [1, 2]] and again["epochs"] == 2
    assert again["training_runs"][0]["wall_time_s"] == first["wall_time_s"]  # the published run's, from its card
    assert [part["data_pipeline"] for part in again["training_runs"]] == [card["data_pipeline"],
                                                                           metrics["data_pipeline"]]
    assert again["warm_starts"] == metrics["warm_starts"] and "wall_time_epochs" not in again


def test_an_entry_trained_on_with_weight_averaging_is_published_as_such(private_zoo):
    """The sixth Fashion-MNIST round's twin (docs/zoo-training.md): a config named after the entry,
    with more epochs and a moving average of the weights, continues the published weights
    (--from-zoo); the entry's config then takes that recipe, and its card says so."""
    tmp_path = private_zoo[0]
    entry = config_module.load_config("tiny-digits")
    twin = entry.replace(training={"epochs": 3, "ema_momentum": 0.9})
    assert twin.name == "tiny-digits"
    _, metrics = train(twin, out_dir=tmp_path / "twin", from_zoo=True, verbose=0)
    assert (metrics["resumed_from_epoch"], metrics["epochs"]) == (2, 3)
    with pytest.raises(ValueError, match="did not train the recipe of zoo entry 'tiny-digits'"):
        zoo.publish(tmp_path / "twin")  # not before the entry's config is the twin's recipe
    (tmp_path / "zoo_configs" / "tiny-digits.toml").write_text(twin.to_toml())
    card = json.loads((zoo.publish(tmp_path / "twin") / "card.json").read_text())
    assert card["training_ema_momentum"] == 0.9 and card["epochs"] == 3
    assert zoo.trained_how(card).endswith(", weights averaged (EMA 0.9)")
    assert [part["epochs"] for part in card["training_runs"]] == [[0, 2], [2, 3]]
    from capszoo.training import evaluate

    assert evaluate(capszoo.load("tiny-digits"), "tiny-digits")["accuracy"] == pytest.approx(card["test_accuracy"])


def test_continuing_an_untrained_entry_says_how_to_train_it(private_zoo, capsys):
    tmp_path = private_zoo[0]
    shutil.rmtree(tmp_path / "saved_models" / "tiny-digits")
    with pytest.raises(TrainingError, match="no published weights to continue: train it with `capszoo train"):
        train("tiny-digits", out_dir=tmp_path / "none", from_zoo=True, verbose=0)
    assert main(["train", "tiny-digits", "--from-zoo", "--out", str(tmp_path / "none"), "--verbose", "0"]) == 2
    assert capsys.readouterr().err.strip() == ("capszoo train: error: zoo entry 'tiny-digits' has no published "
                                               "weights to continue: train it with `capszoo train tiny-digits`")
    assert not (tmp_path / "none" / "checkpoints").exists()


def test_class_names_name_the_ids_a_loaded_model_predicts(tmp_path):
    """capszoo.class_names(entry) is the Python side of what `capszoo predict` prints: the name
    of each class id, for a zoo entry, a config file, a run folder or a Config."""
    assert capszoo.class_names("ara-fashion-mnist") == (
        "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
    assert capszoo.class_names("uniform-cifar10")[3] == "cat"
    config = config_module.load_config("dra-digits")
    assert capszoo.class_names(config) == tuple("0123456789")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.toml").write_text(
        (config_module.zoo_configs_dir() / "ara-cifar10.toml").read_text())
    assert capszoo.class_names(tmp_path / "run")[0] == "airplane"
    model = capszoo.load("ara-digits")
    assert model.input_shape == (None, 28, 28, 1) and model.output_shape == (None, 10)
    assert len(capszoo.class_names("ara-digits")) == model.output_shape[-1]
    with pytest.raises(ValueError, match="unknown model or config 'ara-fashon-mnist'.*did you mean ara-fashion-mnist"):
        capszoo.class_names("ara-fashon-mnist")


def test_another_entrys_published_weights_load_with_a_warning(capsys):
    # ara-, dra- and uniform-digits share one architecture: each loaded the others' files without
    # a word, and the model then routed with weights trained for another routing.
    import warnings

    theirs = zoo.source_saved_models() / "ara-digits" / zoo.WEIGHTS_FILE
    message = (f"the weights given for 'dra-digits' ({theirs}) are the published weights of 'ara-digits', trained "
               "with its routing and recipe (that model loads by its own name, 'ara-digits')")
    with pytest.warns(zoo.ZooWarning, match=re.escape(message)):
        capszoo.load("dra-digits", weights=theirs, compile=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an entry's own file: no warning
        capszoo.load("ara-digits", weights=theirs, compile=False)
    assert main(["eval", "dra-digits", "--weights", str(theirs)]) == 0
    assert capsys.readouterr().err.splitlines() == [f"capszoo eval: warning: {message}"]
