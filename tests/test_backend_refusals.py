"""What the TensorFlow-only features say on another backend, and that they leave nothing behind.

SavedModel export and ``tf.distribute`` need ``KERAS_BACKEND=tensorflow``; their own tests are
marked ``tensorflow_only`` and skipped elsewhere. These run in CI under JAX and PyTorch.
"""

import keras
import pytest

from capszoo import CapsNet2
from capszoo.cli import main
from capszoo.export import export_saved_model
from capszoo.training import train

pytestmark = pytest.mark.any_backend

not_tensorflow = pytest.mark.skipif(keras.backend.backend() == "tensorflow",
                                    reason="the TensorFlow path is tested in test_export.py and test_training.py")


def tiny_model():
    return CapsNet2(input_shape=(12, 12, 1), num_classes=3, conv_filters=8, conv_kernel_size=3, primary_types=4,
                    primary_dim=4, primary_kernel_size=3, capsules=(3,), capsule_dims=4,
                    routing="adaptive_lambda", lam=3.0)


@not_tensorflow
def test_export_names_the_backend_it_needs_and_writes_nothing(tmp_path):
    with pytest.raises(ValueError, match="SavedModel export needs KERAS_BACKEND=tensorflow"):
        export_saved_model(tiny_model(), tmp_path / "models")
    assert not (tmp_path / "models").exists()


@not_tensorflow
def test_cli_export_says_so_in_one_line(tmp_path, capsys):
    assert main(["export", "ara-digits", "--out", str(tmp_path / "models")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("capszoo export: error: SavedModel export needs KERAS_BACKEND=tensorflow")
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "models").exists()


@not_tensorflow
@pytest.mark.parametrize("distribute", ["mirrored", "multi_worker"])
def test_tf_distribute_is_refused_before_any_data_or_run_folder(tiny_config_path, tmp_path, distribute):
    with pytest.raises(ValueError, match=f"distribute='{distribute}' uses tf.distribute and needs "
                                         "KERAS_BACKEND=tensorflow"):
        train(tiny_config_path, out_dir=tmp_path / "run", distribute=distribute, verbose=0)
    assert not (tmp_path / "run").exists()


def test_an_unknown_strategy_is_named_before_any_run_folder(tiny_config_path, tmp_path):
    with pytest.raises(ValueError, match="distribute must be 'mirrored' or 'multi_worker', got 'mirorred'"):
        train(tiny_config_path, out_dir=tmp_path / "run", distribute="mirorred", verbose=0)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("backend, blocked, cause", [
    ("notabackend", "", "Unable to import backend : notabackend"),
    ("torch", "torch", "No module named 'torch"),  # a backend not installed, as after `pip install .`
])
def test_a_backend_that_cannot_be_imported_is_named_at_import(backend, blocked, cause):
    # It was Keras' traceback from keras/src/tree/torchtree_impl.py ending in "No module named 'torch'".
    import os
    import subprocess
    import sys

    code = f"import sys; sys.modules.update(dict.fromkeys({blocked!r}.split(), None)); import capszoo"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "KERAS_BACKEND": backend})
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"ImportError: capszoo cannot import Keras with KERAS_BACKEND={backend}: {cause}")
    assert last.endswith(". Install that backend or set KERAS_BACKEND to one that is installed: tensorflow, jax or "
                         "torch")


def test_the_command_names_a_backend_that_cannot_be_imported_in_one_line():
    # The console script imports the package before main() runs, so the ImportError above came
    # under Python's traceback; the command now gives the CLI's one line and status 2.
    import os
    import subprocess
    import sys
    from pathlib import Path

    script = Path(sys.executable).with_name("capszoo")
    commands = [[sys.executable, "-m", "capszoo", "list"]] + ([[str(script), "list"]] if script.is_file() else [])
    for command in commands:
        done = subprocess.run(command, capture_output=True, text=True, timeout=300,
                              env={**os.environ, "KERAS_BACKEND": "notabackend"})
        assert done.returncode == 2, done.stderr
        assert done.stderr.splitlines() == [
            "capszoo: error: cannot import Keras with KERAS_BACKEND=notabackend: Unable to import backend : "
            "notabackend. Install that backend or set KERAS_BACKEND to one that is installed: tensorflow, jax or torch"]
        assert done.stdout == ""
