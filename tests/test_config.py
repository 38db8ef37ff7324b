import re
from pathlib import Path

import pytest

from capszoo.config import (
    Config,
    ModelConfig,
    load_config,
    tomllib,
    zoo_configs_dir,
    zoo_entry_config,
    zoo_entry_file,
    zoo_names,
)


def test_every_zoo_config_loads_and_round_trips():
    names = zoo_names()
    assert {"ara-digits", "dra-digits", "ara-mnist", "dra-mnist"} <= set(names)
    for name in names:
        config = load_config(name)
        assert config.name == name and config.description
        assert Config.from_dict(tomllib.loads(config.to_toml())) == config


def test_zoo_routings():
    assert load_config("ara-mnist").model.routing == "adaptive_lambda" and load_config("ara-mnist").model.lam == 3.0
    assert load_config("dra-mnist").model.routing == "dynamic" and load_config("dra-mnist").model.iterations == 3


@pytest.mark.parametrize("data, message", [
    ({"model": {"lambda": 3}}, r"unknown model config key\(s\): model.lambda$"),
    # A routing's own option as a model field: the message said only "unknown key".
    ({"model": {"routing": "dynamic", "stop_gradient": True}}, re.escape(
        "unknown model config key(s): model.stop_gradient (stop_gradient: a routing option, given as "
        "routing_options = {stop_gradient = ...})")),
    ({"data": {"datset": "mnist"}}, "unknown data config key.*data.datset"),
    ({"training": {"epoch": 3}}, "unknown training config key.*training.epoch"),
    ({"optimizer": {}}, "unknown config key.*optimizer"),
    ({"training": {"epochs": 0}}, "training.epochs must be an integer >= 1"),
    ({"training": {"learning_rate": -1e-3}}, "training.learning_rate must be > 0"),
    ({"training": {"lr_decay": 1.5}}, "training.lr_decay must be <= 1"),
    ({"data": {"dataset": "imagenet"}}, "data.dataset must be one of"),
    ({"data": {"validation_fraction": 0.9}}, "data.validation_fraction must be <= 0.5"),
    ({"data": {"source": "web"}}, "data.source must be one of"),
    ({"model": {"routing": "adaptive_lambda", "lam": 0}}, "λ"),
    ({"data": {"dataset": "cifar10"}}, r"model.input_shape \[28, 28, 1\] does not match.*\[32, 32, 3\]"),
    ({"data": {"dataset": "mnist", "image_size": [20, 20]}}, "padding cannot shrink"),
])
def test_invalid_configs_name_the_key(data, message):
    with pytest.raises(ValueError, match=message):
        Config.from_dict(data)


def test_toml_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[model\nrouting = 1")
    with pytest.raises(ValueError, match="bad.toml is not valid TOML"):
        load_config(bad)
    wrong = tmp_path / "wrong.toml"
    wrong.write_text("[training]\nepochs = 'ten'\n")
    with pytest.raises(ValueError, match="wrong.toml: training.epochs must be an integer"):
        load_config(wrong)
    assert load_config(wrong.with_name("ok.toml").write_text("") or wrong.with_name("ok.toml")).name == "ok"
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff")  # was: "'utf-8' codec can't decode byte 0x89 ..."
    with pytest.raises(ValueError, match="binary.toml is not a text file"):
        load_config(binary)


@pytest.mark.parametrize("name", ["model.keras", "model.weights.h5", "epoch-0003.keras"])
def test_a_weights_file_given_as_the_model_says_to_pass_it_as_weights(tmp_path, name):
    # `capszoo predict model.keras x.png` read the file as TOML: "'utf-8' codec can't decode byte ...".
    path = tmp_path / name
    path.write_bytes(b"PK\x03\x04\x83\x00")
    with pytest.raises(ValueError, match=rf"{name} is not a config: it holds a model's weights\. Give the config it "
                                         rf"was trained from .* `--weights {re.escape(str(path))}`"):
        load_config(path)


def test_unknown_name_suggests_close_matches():
    with pytest.raises(ValueError, match="did you mean ara-mnist"):
        load_config("ara-mnst")
    # Case and underscores (the datasets' spelling) are not what makes a name unknown: the entry
    # they spell comes first, where 'ARA-DIGITS' used to find no match at all and list every entry.
    for text, first in [("ARA-DIGITS", "ara-digits"), ("ara_fashion_mnist", "ara-fashion-mnist"),
                        ("Dra-Fashion_Mnist", "dra-fashion-mnist")]:
        with pytest.raises(ValueError, match=f"unknown model or config {text!r}.*; did you mean {first},"):
            load_config(text)


def test_a_bare_entry_name_means_the_entry_whatever_the_current_folder_holds(monkeypatch, tmp_path):
    # A user's folder named like an entry (predictions, an export, a run) used to shadow it:
    # `capszoo.load("ara-digits")` failed with "ara-digits is not a run folder" in such a folder.
    entry = Config.from_toml(zoo_configs_dir() / "ara-digits.toml")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ara-digits").mkdir()
    assert zoo_entry_file("ara-digits") == zoo_configs_dir() / "ara-digits.toml"
    assert load_config("ara-digits").sha256() == entry.sha256()
    assert zoo_entry_config("ara-digits").sha256() == entry.sha256()
    with pytest.raises(ValueError, match="ara-digits is not a run folder: it has no config.toml"):
        load_config("./ara-digits")  # a folder part: the folder
    with pytest.raises(ValueError, match="ara-digits is not a run folder"):
        load_config(Path("ara-digits"))  # a Path is a path, whatever it holds
    run = entry.replace(training={"epochs": 2})
    (tmp_path / "ara-digits" / "config.toml").write_text(run.to_toml())
    assert load_config("./ara-digits").training.epochs == 2
    assert load_config("ara-digits").training.epochs == entry.training.epochs
    for not_bare in ("ara-digits.toml", "./ara-digits", "x/ara-digits", "", 3):
        assert zoo_entry_file(not_bare) is None
    with pytest.raises(ValueError, match="unknown zoo entry 'x/ara-digits'"):
        zoo_entry_config("x/ara-digits")
    with pytest.raises(ValueError, match="empty model name ''"):
        load_config("")
    with pytest.raises(ValueError, match="empty model name ' '"):
        load_config(" ")


@pytest.mark.parametrize("routing, values, key", [
    ("dynamic", {"lam": 3.0}, "lam"),
    ("adaptive", {"lam": 0.5}, "lam"),
    ("adaptive_lambda", {"iterations": 5}, "iterations"),
    ("uniform", {"iterations": 1}, "iterations"),
    ("uniform", {"lam": 2.0}, "lam"),
])
def test_a_routing_hyperparameter_the_routing_ignores_is_refused(routing, values, key):
    # CapsNet2(routing="dynamic", lam=3.0) built a dynamic-routing net and dropped λ silently.
    with pytest.raises(ValueError, match=rf"model.{key} = .* has no effect with '{routing}' routing"):
        ModelConfig(routing=routing, **values)
    with pytest.raises(ValueError, match=f"model.{key} = "):
        Config.from_dict({"model": {"routing": routing, **values}})
    ModelConfig(routing=routing)  # the defaults stand for "not given"


def test_changing_the_routing_drops_what_the_new_one_does_not_take():
    lam3 = ModelConfig(routing="adaptive_lambda", lam=3.0)
    assert lam3.replace(routing="dynamic").lam == 1.0  # was kept, and then ignored
    assert lam3.replace(routing="adaptive_lambda").lam == 3.0
    five = ModelConfig(routing="dynamic", iterations=5, routing_options={"stop_gradient": True})
    assert (five.replace(routing="adaptive").iterations, five.replace(routing="adaptive").routing_options) == (5, {})
    back = five.replace(routing="uniform")
    assert (back.iterations, back.lam, back.routing_options) == (3, 1.0, {})
    assert five.replace(routing="adaptive_lambda", lam=2.0).lam == 2.0
    with pytest.raises(ValueError, match="model.iterations = 5 has no effect"):
        five.replace(routing="adaptive_lambda", iterations=5)


def test_a_config_given_a_new_routing_as_a_dict_drops_what_it_does_not_take():
    # Config.replace(model={"routing": "dynamic"}) on a λ = 3 entry raised "model.lam = 3.0 has no
    # effect with 'dynamic' routing", a λ the caller never gave; ModelConfig.replace dropped it.
    ara = load_config("ara-digits")
    dra = ara.replace(model={"routing": "dynamic"})
    assert (dra.model.routing, dra.model.lam, dra.model.iterations) == ("dynamic", 1.0, 3)
    assert dra.model == ara.model.replace(routing="dynamic")
    assert ara.replace(model={"routing": "dynamic", "iterations": 2}).model.iterations == 2
    assert ara.replace(model={"conv_filters": 32}).model.lam == 3.0  # the routing kept: λ kept
    with pytest.raises(ValueError, match="model.lam = 2.0 has no effect with 'dynamic'"):
        ara.replace(model={"routing": "dynamic", "lam": 2.0})
    with pytest.raises(ValueError, match="unknown model config key.*model.lamda"):
        ara.replace(model={"lamda": 2.0})
    with pytest.raises(ValueError, match="unknown routing 'dynamc'"):
        ara.replace(model={"routing": "dynamc"})


def test_hash_identifies_the_recipe_not_the_location():
    config = load_config("ara-mnist")
    assert config.sha256() == config.replace(data={"data_dir": "/elsewhere"}, name="other").sha256()
    assert config.sha256() != config.replace(training={"epochs": 11}).sha256()


def test_overrides():
    config = load_config("ara-digits").with_overrides(epochs=1, data_dir="/x")
    assert config.training.epochs == 1 and config.data.data_dir == "/x"
    with pytest.raises(ValueError, match="training.epochs"):
        load_config("ara-digits").with_overrides(epochs=0)


def test_the_fashion_mnist_sweep_differs_from_its_zoo_entries_only_where_it_says():
    """tools/experiments/fashion-mnist-sweep/ (docs/zoo-training.md): Fashion-MNIST variants, each holding out a
    tenth of the training split, whose chosen member's recipe is the zoo entry's."""
    from pathlib import Path

    folder = Path(__file__).resolve().parents[1] / "tools" / "experiments" / "fashion-mnist-sweep"
    sweep = {path.stem: load_config(path) for path in sorted(folder.glob("*.toml"))}
    assert len(sweep) == 18
    lams = {"-l01": 0.1, "-l1": 1.0, "-l2": 2.0, "-l4": 4.0}
    for name, config in sweep.items():
        epochs = 90 if name.endswith("-ema") else 80 if "-e80" in name else 50
        assert (config.data.dataset, config.data.validation_fraction, config.training.epochs) == \
            ("fashion_mnist", 0.1, epochs), name
        assert config.data.horizontal_flip == ("-flip" in name), name
        assert config.training.ema_momentum == (0.999 if name.endswith("-ema") else 0.0), name
        assert config.model.routing == {"fa": "adaptive_lambda", "fd": "dynamic"}[name[:2]], name
        assert (config.data.shift_pixels, config.model.decoder, config.training.lr_decay) == \
            (int(name[4]), "-rec" in name, 0.97 if "-d97" in name else 0.95), name
        if name.startswith("fa"):
            lam = next((value for suffix, value in lams.items() if name.endswith(suffix)), 3.0)
            assert config.model.lam == lam, name
    # the loans' twins: each the member's recipe on the whole split, nothing else changed
    twins = {path.stem: load_config(path) for path in sorted((folder / "twins").glob("*.toml"))}
    assert set(twins) == {"ta-s1-l2", "ta-s1-l4", "ta-s1-d97", "ta-s1-d97-e80", "ta-s1-flip", "ta-s1-d97-e80-flip",
                          "ta-s1-d97-e80-ema"}
    averaged = {"training": {"epochs": 90, "ema_momentum": 0.999}}
    for name, config in twins.items():
        if name == "ta-s1-d97-e80-ema":  # the sixth round's: the published entry trained on, averaged
            assert config.name == "ara-fashion-mnist"  # so that --from-zoo continues that entry's card
            assert config.sha256() == load_config("ara-fashion-mnist").replace(**averaged).sha256()
            continue
        member = sweep["fa-" + name.removeprefix("ta-")]
        assert config.sha256() == member.replace(data={"validation_fraction": 0.0}).sha256(), name
    # ... and its member, the 80-epoch mirrored member trained on the same way
    assert sweep["fa-s1-d97-e80-flip-ema"].sha256() == sweep["fa-s1-d97-e80-flip"].replace(**averaged).sha256()
    # the members chosen on validation data (docs/zoo-training.md) train the published recipes on the whole split
    for member, entry in (("fa-s1-d97-e80", "ara-fashion-mnist"), ("fd-s2-d97", "dra-fashion-mnist")):
        published = load_config(entry)
        chosen = sweep[member].replace(data={"validation_fraction": 0.0},
                                       training={"precision": published.training.precision})
        assert chosen.sha256() == published.sha256(), entry


def _loan_rule(name="choose_fourth_loan"):
    import importlib.util
    from pathlib import Path

    folder = Path(__file__).resolve().parents[1] / "tools" / "experiments" / "fashion-mnist-sweep"
    spec = importlib.util.spec_from_file_location(name, folder / f"{name}.py")
    rule = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(rule)
    return rule


def test_the_fourth_loan_rule_returns_a_twin_only_above_the_published_member():
    """choose_fourth_loan.py, fixed before its runs: the best member's twin if it beats fa-s1's 0.9242."""
    rule = _loan_rule()
    scores = {"fa-s1-l2": 0.9230, "fa-s1-l4": 0.9250, "fa-s1-d97": 0.9245, "fa-s1-d97-e80": 0.9100}
    assert rule.choose(scores) == "ta-s1-l4"
    assert rule.choose({**scores, "fa-s1-l4": 0.9242}) == "ta-s1-d97"  # a tie with fa-s1 does not beat it
    assert rule.choose({member: 0.9242 for member in rule.MEMBERS}) == "none"
    # a member short of its planned epochs has no final score (None) and cannot be chosen
    assert rule.choose({**scores, "fa-s1-l4": None}) == "ta-s1-d97"
    assert rule.choose({member: None for member in rule.MEMBERS}) == "none"


def test_the_fourth_loan_rule_takes_the_members_finished_on_the_cpu_as_measured_there(monkeypatch, capsys):
    """fa-s1-d97, fa-s1-l2 and fa-s1-l4 ran their 50 epochs on the CPU (final validation 0.9157,
    0.9225 and 0.9172): a loan does not run them again, so the rule reads only fa-s1-d97-e80's run,
    and their CPU scores compete with it."""
    rule = _loan_rule()
    assert rule.FINISHED_ON_CPU == {"fa-s1-d97": 0.9157, "fa-s1-l2": 0.9225, "fa-s1-l4": 0.9172}
    read = []

    def loan_runs(run):
        read.append(run.removeprefix(rule.RUNS))
        return {"fa-s1-d97-e80": 0.9100}[read[-1]]

    monkeypatch.setattr(rule, "final_val_accuracy", loan_runs)
    rule.main()
    assert read == ["fa-s1-d97-e80"]
    assert capsys.readouterr().out == "none\n"

    # A CPU score is taken as measured even when it is falsy: it is never replaced by a loan's run.
    monkeypatch.setattr(rule, "FINISHED_ON_CPU", {"fa-s1-d97": 0.0, "fa-s1-l2": 0.0, "fa-s1-l4": 0.0})
    read.clear()
    rule.main()
    assert read == ["fa-s1-d97-e80"]


def test_the_fifth_loan_rule_reads_both_flip_members_and_needs_more_than_the_published_member(monkeypatch, capsys):
    """choose_fifth_loan.py, fixed before its runs: the better flip member's twin if it beats
    fa-s1-d97-e80's 0.9247 (5,548 of 6,000 validation images; 5,549 beat it)."""
    rule = _loan_rule("choose_fifth_loan")
    assert rule.MEMBERS == ("fa-s1-flip", "fa-s1-d97-e80-flip") and rule.PUBLISHED_VAL == 0.9247
    runs = {"fa-s1-flip": 5549 / 6000, "fa-s1-d97-e80-flip": 5548 / 6000}
    read = []

    def loan_runs(run):
        read.append(run.removeprefix(rule.RUNS))
        return runs[read[-1]]

    monkeypatch.setattr(rule, "final_val_accuracy", loan_runs)
    monkeypatch.setattr(rule, "FINISHED_ON_CPU", {})  # the rule as written, before either member ran
    rule.main()
    assert read == list(rule.MEMBERS) and capsys.readouterr().out == "ta-s1-flip\n"
    runs.update({"fa-s1-flip": 5548 / 6000, "fa-s1-d97-e80-flip": None})  # a tie, and a run cut short
    rule.main()
    assert capsys.readouterr().out == "none\n"
    runs.update({"fa-s1-flip": 0.93, "fa-s1-d97-e80-flip": 0.94})
    rule.main()
    assert capsys.readouterr().out == "ta-s1-d97-e80-flip\n"


def test_the_fifth_loan_rule_takes_a_member_finished_on_the_cpu_as_measured_there(monkeypatch, capsys):
    """A member that ended on the CPU is not run again by a loan: the rule reads only the other
    member's run, and the CPU score competes with it (even a falsy one is never replaced)."""
    rule = _loan_rule("choose_fifth_loan")
    # both ended on the CPU (runs/cpu-s31 and runs/cpu-s38), under 0.9247
    assert rule.FINISHED_ON_CPU == {"fa-s1-flip": 0.9150, "fa-s1-d97-e80-flip": 0.9225}
    read = []

    def loan_runs(run):
        read.append(run.removeprefix(rule.RUNS))
        return {"fa-s1-d97-e80-flip": 0.9250}[read[-1]]

    monkeypatch.setattr(rule, "final_val_accuracy", loan_runs)
    rule.main()  # as recorded: no run is read, and neither member beats 0.9247
    assert read == [] and capsys.readouterr().out == "none\n"
    monkeypatch.setattr(rule, "FINISHED_ON_CPU", {"fa-s1-flip": 0.9150})  # before fa-s1-d97-e80-flip ended
    rule.main()  # fa-s1-flip's 0.9150 leaves the choice to a loan's fa-s1-d97-e80-flip against 0.9247
    assert read == ["fa-s1-d97-e80-flip"] and capsys.readouterr().out == "ta-s1-d97-e80-flip\n"
    read.clear()
    monkeypatch.setattr(rule, "FINISHED_ON_CPU", {"fa-s1-flip": 0.9260})
    rule.main()
    assert read == ["fa-s1-d97-e80-flip"] and capsys.readouterr().out == "ta-s1-flip\n"
    monkeypatch.setattr(rule, "FINISHED_ON_CPU", {"fa-s1-flip": 0.0})
    rule.main()
    assert read == ["fa-s1-d97-e80-flip"] * 2 and capsys.readouterr().out == "ta-s1-d97-e80-flip\n"


def test_the_sixth_round_rule_publishes_the_averaged_twin_only_above_the_bar(monkeypatch, capsys):
    """choose_sixth_round.py, fixed before its member's first epoch: the averaged twin if the
    averaged member's final validation accuracy beats 0.9247; a member short of its 90 epochs
    (None) cannot be chosen."""
    rule = _loan_rule("choose_sixth_round")
    assert (rule.PUBLISHED_VAL, rule.MEMBER, rule.TWIN) == (0.9247, "fa-s1-d97-e80-flip-ema", "ta-s1-d97-e80-ema")
    # the outcome: the member ended at 5,548 of 6,000, the bar's count, and the rule reads no run
    assert rule.FINISHED_ON_CPU == 5548 / 6000
    monkeypatch.setattr(rule, "final_val_accuracy", lambda run: pytest.fail("read a run"))
    rule.main()
    assert capsys.readouterr().out == "none\n"
    monkeypatch.setattr(rule, "FINISHED_ON_CPU", None)  # the rule as it stood before the member ended
    for score, printed in ((0.9248, "ta-s1-d97-e80-ema"), (0.9247, "none"), (0.9225, "none"), (None, "none")):
        read = []
        monkeypatch.setattr(rule, "final_val_accuracy",
                            lambda run, score=score, read=read: read.append(run) or score)
        rule.main()
        assert read == [rule.RUN] and capsys.readouterr().out == printed + "\n", score
