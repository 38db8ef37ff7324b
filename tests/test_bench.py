import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_tool(script, *args):
    """Run ``tools/SCRIPT`` as a user would, with the repository on the path; asserts it succeeded."""
    run = subprocess.run([sys.executable, str(ROOT / "tools" / script), *map(str, args)], capture_output=True,
                         text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    return run


def test_bench_smoke_run_writes_table_and_json(tmp_path):
    out = tmp_path / "bench.json"
    run = run_tool("bench.py", "--tiny", "--rounds", "1", "--steps", "1", "--shapes", "12x12x1", "--models", "CapsNet2",
                   "--routings", "adaptive_lambda", "--batch", "8", "--json", out)
    results = json.loads(out.read_text())
    rows = {(r["model"], r["routing"]): r for r in results["rows"]}
    assert set(rows) == {("backbone", "-"), ("CapsNet2", "adaptive_lambda")}
    assert rows[("backbone", "-")]["ratio_to_floor"] == 1.0
    assert all(r["fits"] and r["step_s"] > 0 and r["peak_gib"] > 0 for r in rows.values())
    assert "| 12x12x1 | CapsNet2 | adaptive_lambda |" in run.stdout


def test_precision_bench_smoke_run(tiny_config_path, tmp_path):
    out = tmp_path / "precision.json"
    run = run_tool("bench_precision.py", "--entries", tiny_config_path, "--batch", "8", "--rounds", "1", "--steps", "1",
                   "--json", out)
    (row,) = json.loads(out.read_text())["rows"]
    assert set(row["step_s"]) == {"float32", "mixed_bfloat16"} and min(row["step_s"].values()) > 0
    assert row["ratio_float32_to_mixed"] == row["step_s"]["float32"] / row["step_s"]["mixed_bfloat16"]
    assert f"| {tiny_config_path} |" in run.stdout


def test_fit_bench_smoke_run(tiny_config_path, tmp_path):
    out = tmp_path / "fit.json"
    run = run_tool("bench_fit.py", "--entries", tiny_config_path, "--rounds", "2", "--steps", "2", "--warmup", "1",
                   "--json", out)
    (row,) = json.loads(out.read_text())["rows"]
    assert set(row["ms_per_step"]) == {"sync", "async", "none"}
    assert all(len(times) == 2 and min(times) > 0 for times in row["rounds"].values())
    assert row["ratio_sync_to_async"] == row["ms_per_step"]["sync"] / row["ms_per_step"]["async"]
    assert f"| {tiny_config_path} |" in run.stdout


def test_float16_weights_check_on_the_bundled_entry(tmp_path):
    out = tmp_path / "float16.json"
    run = run_tool("float16_weights.py", "--entries", "ara-digits", "--json", out)
    (row,) = json.loads(out.read_text())["rows"]
    card = json.loads((ROOT / "saved_models" / "ara-digits" / "card.json").read_text())
    assert row["float32_accuracy"] == card["test_accuracy"] and row["examples"] == 359
    assert abs(row["change_points"]) <= 0.05 and row["float16_bytes"] * 2 == row["float32_bytes"]
    assert "| `ara-digits` | 359 | 99.72 % |" in run.stdout
