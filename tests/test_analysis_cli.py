import re

import pandas as pd
import pytest

from capszoo import analysis

# The commands are backend-neutral glue over capszoo.analysis (tested on every backend in
# test_analysis.py); these run on the default backend only, to keep the JAX run short.


@pytest.fixture
def figures(monkeypatch):
    saved = []
    original = analysis._save

    def record(fig, path):
        saved.append(fig)
        return original(fig, path)

    monkeypatch.setattr(analysis, "_save", record)
    return saved


def _check_figure(fig):
    axes = fig.get_axes()
    assert axes and all(ax.get_title() and ax.get_xlabel() and ax.get_ylabel() for ax in axes)
    assert all(ax.get_legend() is not None for ax in axes)


@pytest.mark.parametrize("argv, said", [
    (["energy", "--random", "--images", "2", "--iterations", "6"],
     "random predictions: 2 example(s), 64 -> 3 capsules of dimension 8, seed 0; dynamic routing, 6 iterations"),
    (["energy", "--random", "--images", "2", "--iterations", "1"],
     "random predictions: 2 example(s), 64 -> 3 capsules of dimension 8, seed 0; dynamic routing, 1 iteration"),
    (["distribution", "--inputs", "20", "--iterations", "8"], None),
    (["couplings", "RUN", "--images", "8"],
     "RUN: dynamic routing traced for 3 iterations on capsule layer 1 of 1 (64 -> 10 capsules, trained "
     "with adaptive_lambda routing), 8 test images of digits"),
    (["energy", "RUN", "--images", "400", "--iterations", "5"],  # the digits test split holds 359
     "RUN: dynamic routing traced for 5 iterations on capsule layer 1 of 1 (64 -> 10 capsules, trained "
     "with adaptive_lambda routing), 359 test images of digits (all the split holds; 400 asked for)"),
    (["gradients", "CONFIG", "--images", "4", "--depths", "2", "3"],
     "RUN: the first convolution's gradient on 4 test images of digits, CapsNet depths 2, 3 x routings "
     "dynamic, adaptive_lambda, seed 0"),
])
def test_each_analyze_command_writes_a_labelled_png_and_a_csv(argv, said, tmp_path, tiny_config_path, figures,
                                                               capsys):
    from capszoo.cli import main

    if "RUN" in argv or "CONFIG" in argv:
        run = tmp_path / "run"
        run.mkdir()
        (run / "config.toml").write_text(tiny_config_path.read_text())
        from capszoo.config import load_config
        from capszoo.training import build_model, save_model_weights

        config = load_config(tiny_config_path)
        save_model_weights(build_model(config), config, run / "model.weights.h5")
        argv = [str(run) if a in ("RUN", "CONFIG") else a for a in argv]
    out = tmp_path / "out"
    assert main(["analyze", *argv, "--out", str(out)]) == 0
    kind = argv[0]
    assert (out / f"{kind}.png").stat().st_size > 1000
    frame = pd.read_csv(out / f"{kind}.csv")
    printed = capsys.readouterr().out
    assert len(frame) > 0 and f"wrote {out / (kind + '.png')}" in printed
    if said:  # what was traced, on what: the CSV and the figure do not say
        assert printed.splitlines()[0] == said.replace("RUN", str(tmp_path / "run"))
    if kind == "couplings":  # the scale behind couplings that stay near uniform
        assert {"logit_spread", "output_length"} <= set(frame.columns) and frame.logit_spread[0] == 0
        assert re.fullmatch(r"mean \|u_hat\| \S+ \(largest \S+\): the logit updates u_hat \. v scale with it, "
                            r"and the couplings stay near 1/10 while logit_spread stays small", printed.splitlines()[1])
    assert len(figures) == 1
    _check_figure(figures[0])


def test_analyze_without_a_model_is_one_clear_error(capsys):
    from capszoo.cli import main

    assert main(["analyze", "couplings"]) == 2
    assert "analyze couplings needs MODEL" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    # Each was ignored: the plot of random predictions then passed for one of ara-digits.
    (["distribution", "ara-digits"], "analyze distribution takes no MODEL (got ara-digits): it is the papers' 2-D "
                                     "experiment on random predictions (--inputs, --outputs, --iterations, --seed)"),
    (["energy", "ara-digits", "--random"], "analyze energy takes MODEL (ara-digits) or --random, not both"),
    (["couplings", "ara-digits", "--random"], "--random is for analyze energy, not couplings"),
])
def test_analyze_refuses_what_it_would_ignore(argv, message, tmp_path, capsys):
    from capszoo.cli import main

    assert main(["analyze", *argv, "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err == f"capszoo analyze: error: {message}\n"
    assert not (tmp_path / "out").exists()
