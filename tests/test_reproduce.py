import importlib.util
from pathlib import Path

from tests.conftest import TINY_DIGITS_TOML

ROOT = Path(__file__).resolve().parents[1]


def _reproduce():
    spec = importlib.util.spec_from_file_location("reproduce", ROOT / "tools" / "reproduce.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_grid_tables_diagnose_each_cell_and_a_second_run_reuses_the_search(tmp_path, capsys):
    config = tmp_path / "grid.toml"
    config.write_text(TINY_DIGITS_TOML + "\n[search]\nlam = [1e-9, 3.0]\ndepth = [2, 3]\n"
                      "hidden_capsules = [6]\nhidden_dim = 4\n")
    args = ["--experiments", "grid", "--grid-config", str(config), "--epochs", "1", "--subset", "400",
            "--batch", "4", "--tuning-dir", str(tmp_path / "tuning"), "--out", str(tmp_path / "docs")]
    assert _reproduce().main(args) == 0
    first = capsys.readouterr().out
    assert first.count("  trial {") == 4
    results = (tmp_path / "docs" / "results.md").read_text()
    assert "## Tables 2-3: validation accuracy (%), capsule layers x λ, digits" in results
    assert "| depth \\ lam | 1e-09 | 3 |" in results
    table4 = results.split("## Table 4")[1].split("##")[0]
    # λ = 1e-9 leaves every class capsule without length, at both depths: the starvation collapse.
    assert [line.split(" | ")[1] for line in table4.splitlines() if line.startswith(("| 2 ", "| 3 "))] == \
        ["collapsed: no length"] * 2
    assert "## Grid trials" in results and "relu_active" in results

    assert _reproduce().main(args) == 0  # the finished search is reused: no trial runs again
    assert "  trial {" not in capsys.readouterr().out
    assert (tmp_path / "docs" / "results.md").read_text().split("## Tables 2-3")[1] == \
        results.split("## Tables 2-3")[1]


def test_activity_of_a_trained_run_beside_its_initialisation(tmp_path, capsys):
    from capszoo.training import train

    config = tmp_path / "tiny.toml"
    config.write_text(TINY_DIGITS_TOML)
    _, metrics = train(config, out_dir=tmp_path / "tiny-run", epochs=1, verbose=0)
    args = ["--experiments", "activity", "--activity-runs", str(tmp_path / "tiny-run"), "--batch", "2",
            "--out", str(tmp_path / "docs")]
    assert _reproduce().main(args) == 0
    results = (tmp_path / "docs" / "results.md").read_text()
    assert "## First-convolution activity of trained runs (16 test images)" in results
    row = next(line for line in results.splitlines() if line.startswith("| tiny-run |"))
    assert row.split(" | ")[1:4] == ["adaptive_lambda", "2", "1"]
    assert f"{metrics['test_accuracy']:.4g}" in results
