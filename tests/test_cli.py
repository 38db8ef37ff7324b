import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from capszoo.cli import demo_caption, demo_examples, main


def test_help_on_every_command_and_unknown_command(capsys):
    # In this process (a subprocess per command cost a Keras import each, 80 s of the suite);
    # the module entry point is run once, for --version.
    with pytest.raises(SystemExit) as exited:
        main(["fly"])
    refused = capsys.readouterr().err
    assert exited.value.code == 2 and "invalid choice: 'fly' (choose from " in refused
    commands = re.findall(r"'([a-z]+)'", refused.split("choose from")[1])
    assert sorted(commands) == ["analyze", "card", "demo", "eval", "export", "list", "predict", "publish", "train",
                                "tune"]
    for command in commands:
        with pytest.raises(SystemExit) as exited:
            main([command, "--help"])
        assert exited.value.code == 0 and "usage: capszoo " + command in capsys.readouterr().out, command
    import keras

    import capszoo

    run = subprocess.run([sys.executable, "-m", "capszoo", "--version"], capture_output=True, text=True)
    assert run.returncode == 0 and run.stdout == (
        f"capszoo {capszoo.__version__} (Keras {keras.__version__}, {keras.backend.backend()} backend)\n")


def test_train_eval_predict_round_trip(tiny_config_path, tmp_path, capsys):
    import json

    import numpy as np
    from PIL import Image

    run = tmp_path / "run"
    assert main(["train", str(tiny_config_path), "--out", str(run), "--epochs", "1", "--verbose", "0"]) == 0
    trained = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert trained["epochs"] == 1 and 0 <= trained["test_accuracy"] <= 1
    assert main(["eval", str(run)]) == 0
    evaluated = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert evaluated["accuracy"] == trained["test_accuracy"] and evaluated["examples"] == 359
    # --per-class: the same JSON line first, then a row per class whose counts add up to it
    assert main(["eval", str(run), "--per-class"]) == 0
    first, blank, header, *rows = capsys.readouterr().out.strip().splitlines()
    assert json.loads(first) == evaluated and blank == "" and header.split() == [
        "class", "examples", "correct", "accuracy", "confused_with"]
    counts = np.array([[int(v) for v in row.split()[1:3]] for row in rows])
    assert len(rows) == 10 and counts[:, 0].sum() == 359
    assert counts[:, 1].sum() / 359 == pytest.approx(evaluated["accuracy"], abs=1e-6)
    image = tmp_path / "digit.png"
    Image.fromarray(np.zeros((30, 40, 3), np.uint8)).save(image)
    assert main(["predict", str(run), str(image)]) == 0
    path, class_id, name, score = capsys.readouterr().out.strip().split("\t")
    assert path == str(image) and name == class_id and 0 <= float(score) < 1
    # --no-test: a run that must not look at the test split (one holding out validation data by default)
    assert main(["train", str(tiny_config_path), "--out", str(tmp_path / "blind"), "--epochs", "1", "--verbose", "0",
                 "--no-test"]) == 0
    blind = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert blind["test_accuracy"] is None and blind["test_loss"] is None and "validation_accuracy" not in blind


@pytest.mark.parametrize("args, message", [
    (["train", "ara-mnst"], "unknown model or config 'ara-mnst'.*did you mean ara-mnist"),
    (["train", "ara-mnist", "--data-dir", "/nonexistent"], "not in the offline folder /nonexistent"),
    (["train", "ara-mnist", "--epochs", "0"], "training.epochs must be an integer >= 1"),
    (["train", "ara-digits", "--time-limit", "-5"], "time_limit must be a positive number of seconds, got -5.0"),
    (["train", "ara-digits", "--precision", "float16"],
     "training.precision must be one of 'float32', 'mixed_bfloat16', got 'float16'"),
    # SVHN is not available to train
    (["eval", "ara-svhn"], r"zoo entry 'ara-svhn' is not trained yet: train it with `capszoo train ara-svhn`, or "
                           r"pass --weights FILE"),
    (["eval", str(Path(__file__).resolve().parents[1] / "zoo_configs" / "ara-digits.toml")],
     "is a config, not a trained model: pass --weights FILE"),
    (["eval", "ara-digits", "--weights", "/nonexistent.weights.h5"], "does not exist"),
])
def test_cli_errors_are_one_line_and_exit_2(capsys, args, message):
    import re

    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and re.search(message, err[0]), err


def test_an_error_holding_whole_tensors_is_cut_to_a_readable_line(capsys, monkeypatch):
    # A backend's ValueError (a dict of tensors it could not convert) printed every value: 12,000
    # characters on one line.
    from capszoo import cli

    text = "Attempt to convert a value ({'class_scores': " + "0.5, " * 3000 + "}) to a Tensor."
    whole = len(" ".join(text.split()))

    def dump(args):
        raise ValueError(text)

    monkeypatch.setattr(cli, "cmd_card", dump)
    assert main(["card", "ara-digits"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("capszoo card: error: Attempt to convert a value ({'class_scores'")
    assert err.rstrip().endswith(f"... ({whole - cli.MESSAGE_LIMIT:,} more characters)")
    assert len(err) < cli.MESSAGE_LIMIT + 100
    monkeypatch.undo()
    assert main(["card", "zzzz"]) == 2  # the longest message of ours, every entry named, is whole
    assert capsys.readouterr().err.strip().endswith("uniform-svhn")


def test_an_output_folder_that_is_a_file_is_one_error_line(capsys, tmp_path):
    # Each gave a FileExistsError / NotADirectoryError traceback from os.mkdir.
    in_the_way = tmp_path / "results"
    in_the_way.write_text("not a folder")
    cases = [
        (["train", "ara-digits", "--out", str(in_the_way), "--epochs", "1"],
         f"{in_the_way} is a file where a folder is needed"),
        (["analyze", "energy", "--random", "--out", str(in_the_way)],
         f"{in_the_way} is a file where a folder is needed"),
        (["analyze", "energy", "--random", "--out", str(in_the_way / "sub")],
         f"a part of {in_the_way / 'sub'} is a file where a folder is needed"),
    ]
    for args, message in cases:
        assert main(args) == 2, args
        err = capsys.readouterr().err.strip().splitlines()
        assert err == [f"capszoo {args[0]}: error: {message}"], err


@pytest.mark.parametrize("args", [
    ["demo", "--images", "0"],  # once a matplotlib error halfway through the output; -2 drew a wrong figure
    ["analyze", "energy", "--random", "--dim", "0"],
    ["analyze", "couplings", "ara-digits", "--top", "-3"],
    ["tune", "ara-digits", "--subset", "0"],
    ["tune", "ara-digits", "--max-trials", "x"],
])
def test_counts_below_one_are_refused_by_the_parser(capsys, args):
    with pytest.raises(SystemExit) as stopped:
        main(args)
    assert stopped.value.code == 2
    assert f"error: argument {args[-2]}: must be an integer >= 1, got '{args[-1]}'" in capsys.readouterr().err


def test_predict_rejects_unreadable_images_and_mismatched_weights(tiny_config_path, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", str(tiny_config_path), "--out", str(run), "--epochs", "1", "--verbose", "0"]) == 0
    capsys.readouterr()
    not_image = tmp_path / "notes.png"
    not_image.write_text("hello")
    assert main(["predict", str(run), str(not_image)]) == 2
    assert "is not a readable PNG/JPEG image" in capsys.readouterr().err
    assert main(["eval", "ara-digits", "--weights", str(run / "model.weights.h5")]) == 2
    assert "cannot load weights" in capsys.readouterr().err
    corrupt = tmp_path / "corrupt.weights.h5"
    corrupt.write_bytes((run / "model.weights.h5").read_bytes()[:500])
    assert main(["eval", str(run), "--weights", str(corrupt)]) == 2
    assert "cannot load weights" in capsys.readouterr().err


def test_a_run_killed_before_its_weights_says_how_to_finish_it_or_use_its_checkpoint(tiny_config_path, tmp_path,
                                                                                      capsys):
    # It read "weights file RUN/model.weights.h5 does not exist", as if the run were lost.
    run = tmp_path / "run"
    assert main(["train", str(tiny_config_path), "--out", str(run), "--verbose", "0"]) == 0
    (run / "model.weights.h5").unlink()  # as a run killed after its last checkpoint leaves it
    capsys.readouterr()
    assert main(["eval", str(run)]) == 2
    checkpoint = run / "checkpoints" / "epoch-0002.keras"  # only the newest is kept
    assert capsys.readouterr().err == (
        f"capszoo eval: error: run {run} has not finished: no model.weights.h5, and its last checkpoint is after "
        f"epoch 2 of 2. Finish it with `capszoo train {run / 'config.toml'} --resume --out {run}`, or use that "
        f"checkpoint: --weights {checkpoint} (weights='{checkpoint}' in Python)\n")
    assert main(["eval", str(run), "--weights", str(checkpoint)]) == 0
    assert json.loads(capsys.readouterr().out)["examples"] == 359
    assert main(["train", str(run / "config.toml"), "--resume", "--out", str(run), "--verbose", "0"]) == 0
    assert (run / "model.weights.h5").is_file()
    shutil.rmtree(run / "checkpoints")
    (run / "model.weights.h5").unlink()
    assert main(["eval", str(run)]) == 2
    assert f"{run} holds no trained weights: no model.weights.h5 and no checkpoint" in capsys.readouterr().err


def _image_file(tmp_path, name, array, **save):
    from PIL import Image

    path = tmp_path / name
    Image.fromarray(array).save(path, **save)
    return path


def test_load_image_scales_8_and_16_bit_by_their_own_white(tmp_path):
    import numpy as np

    from capszoo.runs import load_image

    rng = np.random.default_rng(0)
    deep = rng.integers(0, 65536, (28, 28), dtype=np.uint16)
    for shape in ((28, 28, 1), (28, 28, 3)):
        loaded = load_image(_image_file(tmp_path, "deep.png", deep), shape)
        assert loaded.dtype == np.float32 and loaded.shape == shape
        np.testing.assert_allclose(loaded, np.repeat(deep[..., None] / 65535.0, shape[2], axis=-1), atol=1e-6)
    gray = rng.integers(0, 256, (28, 28), dtype=np.uint8)
    np.testing.assert_allclose(load_image(_image_file(tmp_path, "gray.png", gray), (28, 28, 1))[..., 0],
                               gray / 255.0, atol=1e-6)
    opaque = np.dstack([gray, gray, gray, np.full_like(gray, 255)])  # an alpha channel that hides nothing
    np.testing.assert_allclose(load_image(_image_file(tmp_path, "opaque.png", opaque), (28, 28, 3)),
                               np.dstack([gray] * 3) / 255.0, atol=1e-6)


@pytest.mark.parametrize("orientation, shown", [(3, "ROTATE_180"), (6, "ROTATE_270"), (8, "ROTATE_90"),
                                                 (2, "FLIP_LEFT_RIGHT")])
def test_load_image_applies_the_exif_orientation_as_viewers_do(tmp_path, orientation, shown):
    # A phone photo stored sideways, with the EXIF orientation that makes viewers show it upright,
    # was read as stored: the model saw it rotated, silently.
    import numpy as np
    from PIL import Image

    from capszoo.runs import load_image

    stored = np.zeros((28, 20), np.uint8)
    stored[2:6, 1:15] = 255  # a bar near the top left: every rotation and mirror moves it
    stored[10:26, 3:5] = 128
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / "photo.png"
    Image.fromarray(stored).save(path, exif=exif)
    upright = Image.fromarray(stored).transpose(getattr(Image.Transpose, shown))
    expected = tmp_path / "upright.png"
    upright.save(expected)
    size = (upright.height, upright.width, 1)
    np.testing.assert_array_equal(load_image(path, size), load_image(expected, size))
    assert not np.array_equal(load_image(path, size), np.asarray(Image.fromarray(stored).resize(
        (size[1], size[0]), Image.BILINEAR), np.float32)[..., None] / 255)


def test_predict_refuses_a_light_background_for_light_on_black_models_unless_inverted(tmp_path, capsys):
    import re

    import numpy as np
    from sklearn.datasets import load_digits

    digits = load_digits()
    ink_on_paper = (255 - digits.images[-1] * 255 / 16).astype(np.uint8)  # a digit, dark on white
    path = _image_file(tmp_path, "paper.png", ink_on_paper)
    assert main(["predict", "ara-digits", str(path)]) == 2
    err = capsys.readouterr().err
    assert re.search(re.escape(f"{path} has a light background (its border averages ") + r"\d+% of white\)", err)
    assert "trained on digits images, light on black: pass --invert for dark-on-light images" in err
    assert main(["predict", "ara-digits", "--invert", str(path)]) == 0
    assert capsys.readouterr().out.split("\t")[:2] == [str(path), str(digits.target[-1])]


def test_predict_takes_a_folder_as_its_png_and_jpeg_files_by_name(tmp_path, capsys):
    # A folder was "not a readable PNG/JPEG image (IsADirectoryError)".
    import numpy as np
    from sklearn.datasets import load_digits

    digits = load_digits()
    folder = tmp_path / "scans"
    (folder / "deeper").mkdir(parents=True)
    for name, k in (("b.JPG", 1), ("a.png", 0), ("c.jpeg", 2), ("deeper/d.png", 3)):
        save = {"quality": 95} if name.lower().endswith(("jpg", "jpeg")) else {}
        _image_file(folder, name, (digits.images[k] * 255 / 16).astype(np.uint8), **save)
    (folder / "notes.txt").write_text("not an image")
    lone = _image_file(tmp_path, "lone.png", (digits.images[4] * 255 / 16).astype(np.uint8))
    assert main(["predict", "ara-digits", str(folder), str(lone)]) == 0
    rows = [line.split("\t") for line in capsys.readouterr().out.splitlines()]
    assert [row[0] for row in rows] == [str(folder / "a.png"), str(folder / "b.JPG"), str(folder / "c.jpeg"),
                                        str(lone)]
    assert [row[1] for row in rows] == ["0", "1", "2", "4"]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["predict", "ara-digits", str(empty)]) == 2
    assert f"folder {empty} holds no PNG/JPEG file" in capsys.readouterr().err


def test_predict_top_k_gives_a_row_per_class_best_first(tmp_path, capsys):
    import numpy as np
    from sklearn.datasets import load_digits

    import capszoo
    from capszoo.runs import load_image

    path = _image_file(tmp_path, "seven.png", (load_digits().images[7] * 255 / 16).astype(np.uint8))
    scores = capszoo.load("ara-digits").predict(load_image(path, (28, 28, 1))[None], verbose=0)[0]
    assert main(["predict", "ara-digits", str(path)]) == 0
    best = capsys.readouterr().out.splitlines()
    assert main(["predict", "ara-digits", str(path), "--top", "3"]) == 0
    rows = [line.split("\t") for line in capsys.readouterr().out.splitlines()]
    assert rows[0] == best[0].split("\t") and {row[0] for row in rows} == {str(path)}
    assert [int(row[1]) for row in rows] == list(np.argsort(-scores)[:3])
    assert [float(row[3]) for row in rows] == [round(float(scores[int(row[1])]), 4) for row in rows]
    assert main(["predict", "ara-digits", str(path), "--top", "50"]) == 0  # more than there are classes: all 10
    assert sorted(int(line.split("\t")[1]) for line in capsys.readouterr().out.splitlines()) == list(range(10))


def test_check_background_reads_the_border_and_the_dataset():
    import numpy as np

    from capszoo.runs import check_background

    light_on_black = np.zeros((28, 28, 1), np.float32)
    light_on_black[8:20, 10:18] = 1.0
    assert check_background(light_on_black, "x.png", "mnist") is light_on_black
    for dataset in ("mnist", "fashion_mnist", "digits"):
        with pytest.raises(ValueError, match="x.png has a light background once inverted .*leave --invert out"):
            check_background(1 - light_on_black, "x.png", dataset, inverted=True)
    white = np.ones((32, 32, 3), np.float32)
    assert check_background(white, "x.png", "cifar10") is white  # any background: no rule for colour photos
    with pytest.raises(ValueError, match="--invert is for models of images light on black .*not cifar10"):
        check_background(white, "x.png", "cifar10", inverted=True)


def test_load_image_refuses_pixels_it_would_have_to_guess(tmp_path):
    import re

    import numpy as np
    from PIL import Image

    from capszoo.runs import load_image

    stroke = np.zeros((28, 28, 4), np.uint8)
    stroke[10:18, 12:16, 3] = 255  # a canvas drawing: black strokes on a transparent background
    palette = Image.fromarray(np.zeros((28, 28), np.uint8)).convert("P")
    palette.save(tmp_path / "palette.png", transparency=0)
    for path, message in [
        (_image_file(tmp_path, "canvas.png", stroke), "has transparent pixels: flatten it onto the background"),
        (tmp_path / "palette.png", "has transparent pixels"),
        (_image_file(tmp_path, "float.tiff", np.full((28, 28), 0.5, np.float32)), "holds floating-point pixels"),
        (_image_file(tmp_path, "wide.tiff", np.full((28, 28), 70000, np.int32)), "holds 32-bit integer pixels"),
    ]:
        with pytest.raises(ValueError, match=re.escape(str(path)) + ".*" + message):
            load_image(path, (28, 28, 1))


def test_ctrl_c_is_one_line_with_how_to_continue_and_status_130(monkeypatch, tmp_path, capsys):
    # It was Keras' KeyboardInterrupt traceback, from inside fit.
    from capszoo import training

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(training, "train", interrupted)
    assert main(["train", "ara-digits", "--out", str(tmp_path / "run")]) == 130
    assert capsys.readouterr().err == (f"capszoo train: interrupted; {tmp_path / 'run'} keeps a checkpoint of each "
                                       "finished epoch: the same command with --resume continues from the last\n")
    monkeypatch.chdir(tmp_path)
    assert main(["train", "ara-digits"]) == 130
    assert f"interrupted; {Path('runs') / 'ara-digits'} keeps a checkpoint" in capsys.readouterr().err
    from capszoo import tuning

    monkeypatch.setattr(tuning, "search", interrupted)
    search = Path(__file__).resolve().parents[1] / "tools" / "experiments" / "tune-fashion-mnist.toml"
    assert main(["tune", str(search), "--directory", str(tmp_path / "t")]) == 130
    assert capsys.readouterr().err == (
        f"capszoo tune: interrupted; {tmp_path / 't' / 'tune-fashion-mnist'} keeps the finished trials: the same "
        "command with --resume (not --overwrite) goes on, the interrupted trial again\n")
    monkeypatch.setattr(training, "evaluate", interrupted)
    assert main(["eval", "ara-digits"]) == 130
    assert capsys.readouterr().err == "capszoo eval: interrupted\n"


def test_a_reader_that_goes_away_stops_the_command_quietly():
    # `capszoo list | head -1` printed "capszoo list: error: [Errno 32] Broken pipe" (status 2), or
    # Python's "Exception ignored ... BrokenPipeError" when the pipe closed at exit.
    import os

    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    listing = subprocess.Popen([sys.executable, "-m", "capszoo", "list"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, env=env)
    listing.stdout.close()  # before it writes a line
    _, err = listing.communicate(timeout=300)
    ours = [line for line in err.decode().splitlines() if "capszoo" in line or "Broken" in line or "Exception" in line]
    assert listing.returncode == 141 and ours == []


def test_the_demo_shows_the_first_image_of_each_class_then_the_mistakes():
    import numpy as np

    labels = np.array([6, 6, 2, 6, 0, 1, 2, 1, 0, 6])
    predicted = labels.copy()
    predicted[[3, 7, 9]] = 0  # three mistakes
    assert demo_examples(labels, labels, 8).tolist() == [4, 5, 2, 0]  # classes 0, 1, 2, 6
    assert demo_caption(labels, labels, [4, 5, 2, 0]) == "the first of each class (no mistakes)"
    assert demo_examples(labels, predicted, 5).tolist() == [4, 5, 2, 3, 7]  # mistakes get at least half
    assert demo_caption(labels, predicted, [4, 5, 2, 3, 7]) == ("the first of 3 of the 4 classes, "
                                                                "then 2 of the 3 mistakes")
    assert demo_examples(labels, predicted, 8).tolist() == [4, 5, 2, 0, 3, 7, 9]  # and what the classes leave
    assert demo_examples(labels, predicted, 50).tolist() == [4, 5, 2, 0, 3, 7, 9]
    assert demo_caption(labels, predicted, [4, 5, 2, 0, 3, 7, 9]) == "the first of each class, then the 3 mistakes"
    assert demo_caption(labels, predicted, [4, 3]) == "the first of 1 of the 4 classes, then 1 of the 3 mistakes"
    assert demo_caption(labels, predicted, [4]) == "the first of 1 of the 4 classes (none of the 3 mistakes)"
    predicted[[3, 7]] = labels[[3, 7]]
    assert demo_caption(labels, predicted, [4, 5, 2, 0, 9]) == "the first of each class, then the 1 mistake"
