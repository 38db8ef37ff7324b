"""tools/best_run.py: the sweep member that device_train.sh sends back, chosen on validation data."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def write_run(folder, header, rows):
    folder.mkdir()
    lines = [",".join(header)] + [",".join(map(str, row)) for row in rows]
    (folder / "history.csv").write_text("\n".join(lines) + "\n")
    return folder


def best(*runs):
    return subprocess.run([sys.executable, str(ROOT / "tools" / "best_run.py"), *map(str, runs)],
                          capture_output=True, text=True, timeout=60)


def test_picks_the_highest_final_validation_accuracy_across_plain_and_decoder_runs(tmp_path):
    # the decoder run has the best validation accuracy at an earlier epoch, the plain run at the last
    plain = write_run(tmp_path / "zoo-plain", ["epoch", "accuracy", "val_accuracy"], [(0, 0.9, 0.80), (1, 0.95, 0.90)])
    decoder = write_run(tmp_path / "zoo-decoder", ["epoch", "class_scores_accuracy", "val_class_scores_accuracy"],
                        [(0, 0.9, 0.95), (1, 0.99, 0.89)])
    result = best(plain, decoder)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "zoo-plain"
    assert "zoo-decoder: final val_accuracy 0.8900" in result.stderr
    decoder_better = write_run(tmp_path / "zoo-decoder-2", ["epoch", "val_class_scores_accuracy"], [(0, 0.91)])
    assert best(plain, decoder_better).stdout.strip() == "zoo-decoder-2"


def test_refuses_a_run_without_validation_data(tmp_path):
    # a run without a validation split logs its val_ columns as NA (Keras' CSVLogger)
    plain = write_run(tmp_path / "zoo-plain", ["epoch", "accuracy", "val_accuracy"], [(0, 0.9, 0.8)])
    full = write_run(tmp_path / "zoo-full", ["epoch", "accuracy", "val_accuracy", "val_loss"], [(0, 0.99, "NA", "NA")])
    result = best(plain, full)
    assert result.returncode != 0 and result.stdout == ""
    assert "zoo-full: history.csv has no val_accuracy (train with data.validation_fraction > 0)" in result.stderr
