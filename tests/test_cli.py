import subprocess
import sys

import pytest

from capszoo.cli import main


def test_demo_prints_summary_and_scores(capsys):
    assert main(["demo", "--images", "3"]) == 0
    out = capsys.readouterr().out
    assert "Total params: 6,804,224" in out
    assert "class scores = capsule lengths" in out
    assert len([line for line in out.splitlines() if line.strip()[:1].isdigit()]) >= 3


@pytest.mark.parametrize("args, message", [
    (["demo", "--lam", "0"], "λ) must be a finite number > 0"),
    (["demo", "--routing", "dynamic", "--iterations", "0"], "iterations must be an integer >= 1"),
])
def test_bad_values_exit_2_with_one_line(capsys, args, message):
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and err[0].startswith("capszoo demo: error:")


def test_help_and_unknown_routing_via_the_module_entry_point():
    run = subprocess.run([sys.executable, "-m", "capszoo", "demo", "--help"], capture_output=True, text=True)
    assert run.returncode == 0 and "--routing" in run.stdout
    run = subprocess.run([sys.executable, "-m", "capszoo", "demo", "--routing", "nope"], capture_output=True,
                         text=True)
    assert run.returncode == 2 and "invalid choice: 'nope'" in run.stderr
