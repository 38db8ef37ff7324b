import base64
import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from capszoo import CapsNet2, CapsNet4
from capszoo.cli import main
from capszoo.export import example_request, export_saved_model, write_models_config

pytestmark = pytest.mark.tensorflow_only

TINY = dict(input_shape=(12, 12, 1), num_classes=3, conv_filters=8, conv_kernel_size=3, primary_types=4,
            primary_dim=4, primary_kernel_size=3, capsule_dims=4)
VARIANTS = {
    "dynamic": lambda: CapsNet2(routing="dynamic", iterations=3, capsules=(3,), **TINY),
    "adaptive": lambda: CapsNet2(routing="adaptive", iterations=2, capsules=(3,), **TINY),
    "adaptive_lambda": lambda: CapsNet2(routing="adaptive_lambda", lam=3.0, capsules=(3,), **TINY),
    "uniform": lambda: CapsNet2(routing="uniform", capsules=(3,), **TINY),
    "capsnet4": lambda: CapsNet4(routing="adaptive_lambda", lam=2.0, capsules=(6, 5, 3), **TINY),
}

# A fresh interpreter that imports TensorFlow only. It turns TF Serving REST bodies into tensors
# the way the REST API specifies for the row format: "instances" is a list of rows, each an object
# of named inputs; the rows are stacked per input; {"b64": s} is base64-decoded into a byte string.
SERVE_SCRIPT = r"""
import base64, json, sys
import numpy as np
import tensorflow as tf

def rows_to_tensors(body, dtypes):
    names = body["instances"][0].keys()
    def value(v):
        return base64.b64decode(v["b64"]) if isinstance(v, dict) and set(v) == {"b64"} else v
    return {n: tf.constant([value(row[n]) for row in body["instances"]], dtype=dtypes[n]) for n in names}

result = {}
for case in json.loads(sys.stdin.read()):
    model = tf.saved_model.load(case["path"])
    out = {}
    for key, body in case["requests"].items():
        signature = model.signatures[body["signature_name"]]
        dtypes = {n: s.dtype for n, s in signature.structured_input_signature[1].items()}
        outputs = signature(**rows_to_tensors(body, dtypes))
        out[key] = {k: [n.decode() for n in v.numpy()] if v.dtype == tf.string else v.numpy().tolist()
                    for k, v in outputs.items()}
    result[case["name"]] = out
result["modules"] = sorted(m for m in sys.modules if m.split(".")[0] == "capszoo")
print(json.dumps(result))
"""


def png_bytes(image):
    buffer = io.BytesIO()
    Image.fromarray((np.asarray(image)[..., 0] * 255).round().astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    base = tmp_path_factory.mktemp("serving")
    rng = np.random.default_rng(0)
    images = (rng.integers(0, 256, (3, 12, 12, 1)) / 255.0).astype(np.float32)  # exactly representable in PNG
    models = {}
    for name, build in VARIANTS.items():
        model = build()
        models[name] = (model, export_saved_model(model, base, name=name))
    return base, models, images


def _signature_defs(path):
    """The SavedModel's signatures as TF Serving reads them: the ``signature_def`` map of its
    ``saved_model.pb`` (what ``saved_model_cli show`` prints)."""
    from tensorflow.core.protobuf import saved_model_pb2

    saved = saved_model_pb2.SavedModel()
    saved.ParseFromString((path / "saved_model.pb").read_bytes())
    (graph,) = [g for g in saved.meta_graphs if "serve" in g.meta_info_def.tags]
    return graph.signature_def


def test_layout_and_signatures_of_every_variant(exported):
    base, models, _ = exported
    float32, int64, string = tf.float32.as_datatype_enum, tf.int64.as_datatype_enum, tf.string.as_datatype_enum
    for name, (_, path) in models.items():
        assert path == base / name / "1"
        assert {p.name for p in path.iterdir()} >= {"saved_model.pb", "variables", "assets"}
        signatures = _signature_defs(path)
        assert set(signatures) >= {"serving_default", "predict_image_bytes"}

        def spec(tensor):
            return tensor.dtype, [d.size for d in tensor.tensor_shape.dim]

        assert {k: spec(v) for k, v in signatures["serving_default"].inputs.items()} == {
            "images": (float32, [-1, 12, 12, 1])}
        assert {k: spec(v) for k, v in signatures["predict_image_bytes"].inputs.items()} == {
            "image_bytes": (string, [-1])}
        for signature in ("serving_default", "predict_image_bytes"):
            assert {k: spec(v) for k, v in signatures[signature].outputs.items()} == {
                "class_scores": (float32, [-1, 3]), "class_ids": (int64, [-1]), "class_names": (string, [-1]),
                "class_capsules": (float32, [-1, 3, 4])}, (name, signature)


def test_saved_model_cli_shows_the_signatures(exported):
    """TF Serving users' own tool, run once (a TensorFlow start-up per call): it loads the
    SavedModel's functions too (``--all``)."""
    _, models, _ = exported
    _, path = models["capsnet4"]
    show = subprocess.run([sys.executable, "-m", "tensorflow.python.tools.saved_model_cli", "show", "--dir",
                           str(path), "--all"], capture_output=True, text=True, check=True).stdout
    serving = show[show.index("signature_def['serving_default']"):]
    by_bytes = show[show.index("signature_def['predict_image_bytes']"):
                    show.index("signature_def['serving_default']")]
    assert "inputs['images']" in serving and "DT_FLOAT" in serving and "shape: (-1, 12, 12, 1)" in serving
    assert "inputs['image_bytes']" in by_bytes and "DT_STRING" in by_bytes
    for section in (serving, by_bytes):
        assert "outputs['class_scores']" in section and "outputs['class_ids']" in section
        assert "outputs['class_capsules']" in section and "DT_INT64" in section
        assert "outputs['class_names']" in section and "DT_STRING" in section
        assert "shape: (-1, 3, 4)" in section and "shape: (-1, 3)" in section
    assert "keras_tensor" not in show and "output_0" not in show


def test_tensorflow_only_process_serves_rest_bodies_like_the_keras_model(exported):
    _, models, images = exported
    cases = [{"name": name, "path": str(path), "requests": {
        "rows": example_request(images=images),
        "b64": example_request(image_bytes=[png_bytes(image) for image in images]),
    }} for name, (_, path) in models.items()]
    run = subprocess.run([sys.executable, "-c", SERVE_SCRIPT], input=json.dumps(cases), capture_output=True,
                         text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    served = json.loads(run.stdout.strip().splitlines()[-1])
    assert served.pop("modules") == []  # capszoo (and its custom Keras objects) is never imported to serve
    for name, (model, _) in models.items():
        capsules = model.capsules(images)[-1].numpy()
        scores = model.predict(images, verbose=0)
        for key in ("rows", "b64"):
            out = served[name][key]
            np.testing.assert_allclose(out["class_scores"], scores, atol=1e-5, err_msg=f"{name} {key}")
            np.testing.assert_allclose(out["class_capsules"], capsules, atol=1e-5, err_msg=f"{name} {key}")
            np.testing.assert_array_equal(out["class_ids"], scores.argmax(axis=1))
            # a bare CapsNet's dataset is not known: its class names are its ids written out
            assert out["class_names"] == [str(k) for k in scores.argmax(axis=1)]


def test_image_bytes_are_converted_and_resized(exported):
    _, models, _ = exported
    model, path = models["uniform"]
    loaded = tf.saved_model.load(str(path))
    rgb = np.zeros((30, 20, 3), np.uint8)
    rgb[:, :, 1] = 200
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="JPEG")
    out = loaded.signatures["predict_image_bytes"](image_bytes=tf.constant([buffer.getvalue()]))
    gray = tf.image.resize(tf.image.rgb_to_grayscale(tf.io.decode_jpeg(buffer.getvalue()))[None] / 255, (12, 12),
                           antialias=True)
    np.testing.assert_allclose(out["class_scores"].numpy(), model.predict(gray.numpy(), verbose=0), atol=1e-4)


def _with_exif(image, fmt, orientation=None):
    """``image`` (uint8, 2-D) encoded as PNG or JPEG by Pillow, with an EXIF orientation if given."""
    exif = Image.Exif()
    if orientation is not None:
        exif[0x0112] = orientation
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format=fmt, exif=exif)
    return buffer.getvalue()


SIDEWAYS = np.random.default_rng(1).integers(0, 256, (5, 3)).astype(np.uint8)  # no turn or mirror maps it to itself


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
@pytest.mark.parametrize("orientation", [None, 1, 2, 3, 4, 5, 6, 7, 8, 0, 9])
def test_the_exif_orientation_is_read_and_applied_as_pillow_does(fmt, orientation):
    # TensorFlow's decoders ignore it: a served phone photo was classified as stored, sideways.
    from PIL import ImageOps

    from capszoo.export import exif_orientation, upright

    data = _with_exif(SIDEWAYS, fmt, orientation)
    with Image.open(io.BytesIO(data)) as image:
        assert image.getexif().get(0x0112) == orientation  # Pillow wrote (and reads) the tag
        shown = np.asarray(ImageOps.exif_transpose(image))
    read = int(tf.function(exif_orientation)(tf.constant(data)))
    assert read == (orientation if orientation in range(1, 9) else 1)
    if fmt == "PNG":  # lossless: the turned pixels must be Pillow's exactly
        stored = tf.io.decode_png(data, channels=1)
        np.testing.assert_array_equal(upright(stored, tf.constant(read)).numpy()[..., 0], shown)


def _tiff(orientation, little):
    """A hand-built TIFF header and IFD: a Make entry (ASCII, stored at an offset) before the
    Orientation (SHORT), in either byte order."""
    import struct

    e = "<" if little else ">"
    make = b"capszoo\x00"
    ifd = struct.pack(e + "H", 2)
    ifd += struct.pack(e + "HHII", 0x010F, 2, len(make), 8 + 2 + 2 * 12 + 4)
    ifd += struct.pack(e + "HHI", 0x0112, 3, 1) + struct.pack(e + "HH", orientation, 0)
    ifd += struct.pack(e + "I", 0)  # no next IFD
    return (b"II" if little else b"MM") + struct.pack(e + "HI", 42, 8) + ifd + make


@pytest.mark.parametrize("little", [True, False])
def test_a_big_or_little_endian_exif_after_a_jfif_segment_is_found(little):
    import struct

    from capszoo.export import exif_orientation

    plain = _with_exif(SIDEWAYS, "JPEG")
    assert plain[2:4] == b"\xff\xe0"  # Pillow writes JFIF's APP0 first; the Exif APP1 goes after it
    app0_end = 4 + struct.unpack(">H", plain[4:6])[0]
    payload = b"Exif\x00\x00" + _tiff(6, little)
    data = plain[:app0_end] + b"\xff\xe1" + struct.pack(">H", 2 + len(payload)) + payload + plain[app0_end:]
    with Image.open(io.BytesIO(data)) as image:
        assert image.getexif().get(0x0112) == 6  # the independent reader agrees on the hand-built bytes
    assert int(tf.function(exif_orientation)(tf.constant(data))) == 6


@pytest.mark.parametrize("data", [
    b"", b"\xff\xd8", b"\xff\xd8\xff\xe1\x00\x10Exif\x00\x00MM\x00*",  # empty, truncated
    b"\xff\xd8\xff\xe1\x00\x20Exif\x00\x00MM\x00*\xff\xff\xff\xf0" + bytes(20),  # IFD offset past the end
    b"\xff\xd8\xff\xe1\x00\x1aExif\x00\x00II*\x00\x08\x00\x00\x00\xff\xff" + bytes(4),  # 65535 entries claimed
    b"\xff\xd8\xff\xe1\x00\x30http://ns.adobe.com/xap/1.0/\x00" + bytes(16),  # an XMP APP1, not Exif
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\x08eXIfII*\x00\xff\xff\xff\xff",  # eXIf pointing nowhere
    b"\x89PNG\r\n\x1a\n\xff\xff\xff\xffIHDR",  # a chunk length past the end
    b"GIF89a" + bytes(20), b"garbage" * 10,
])
def test_unreadable_exif_means_as_stored_and_never_an_error(data):
    from capszoo.export import exif_orientation

    assert int(tf.function(exif_orientation)(tf.constant(data))) == 1


def test_a_batch_is_read_image_by_image():
    # The loops step through a whole batch together: each image must keep its own answer, whatever
    # its format and however many segments or chunks the others have.
    from capszoo.export import exif_orientation

    batch = [_with_exif(SIDEWAYS, "PNG", 6), _with_exif(SIDEWAYS, "JPEG"), b"garbage",
             _with_exif(SIDEWAYS, "JPEG", 3), _with_exif(SIDEWAYS, "PNG"), _with_exif(SIDEWAYS, "JPEG", 8), b""]
    read = tf.function(exif_orientation)(tf.constant(batch)).numpy().tolist()
    assert read == [6, 1, 1, 3, 1, 8, 1]
    assert tf.function(exif_orientation)(tf.constant([batch[:2], batch[3:5]])).numpy().tolist() == [[6, 1], [3, 1]]


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("size", [(240, 320), (61, 45), (8, 8)])
def test_image_bytes_are_decoded_and_resized_as_capszoo_predict_reads_a_file(tmp_path, size, channels):
    # Shrinking a photo with TF's plain bilinear resize samples four pixels per output pixel:
    # a grainy 240 x 320 photo came out 0.15 gray levels (in [0, 1]) from what `capszoo predict`
    # (Pillow) sees, on average.
    from capszoo.export import decode_image
    from capszoo.runs import load_image

    rng = np.random.default_rng(4)
    photo = rng.integers(0, 256, (*size, 3)).astype(np.uint8)
    photo[size[0] // 4:size[0] // 3] = 255  # some structure on the grain
    path = tmp_path / "photo.png"
    Image.fromarray(photo).save(path)
    shape = (28, 28, channels)
    served = tf.function(decode_image)(tf.constant(path.read_bytes()), tf.constant(1), shape).numpy()
    # Pillow rounds to 8 bits after resizing and converting; TF keeps floats
    np.testing.assert_allclose(served, load_image(path, shape), atol=3 / 255)


def test_16_bit_gray_images_are_scaled_by_their_own_white_as_capszoo_predict_does(tmp_path):
    from capszoo.export import decode_image
    from capszoo.runs import load_image

    path = tmp_path / "deep.png"
    Image.fromarray(np.random.default_rng(5).integers(0, 65536, (40, 30)).astype(np.uint16)).save(path)
    for shape in ((28, 28, 1), (28, 28, 3)):
        served = tf.function(decode_image)(tf.constant(path.read_bytes()), tf.constant(1), shape).numpy()
        np.testing.assert_allclose(served, load_image(path, shape), atol=1e-5)


def _png(image, mode, **options):
    buffer = io.BytesIO()
    Image.fromarray(image, mode).save(buffer, format="PNG", **options)
    return buffer.getvalue()


def test_transparent_images_are_refused_as_capszoo_predict_refuses_them(exported):
    # Their alpha was dropped and what lay under it classified, silently: often black, the zoo's
    # background, so a light-on-dark drawing on a transparent canvas passed for another picture.
    _, models, _ = exported
    signature = tf.saved_model.load(str(models["dynamic"][1])).signatures["predict_image_bytes"]
    gray = np.zeros((12, 12), np.uint8)
    gray[3:9, 5:7] = 220
    cutout = np.where(gray > 0, 255, 0).astype(np.uint8)
    opaque = np.full_like(gray, 255)
    rgb = np.repeat(gray[..., None], 3, axis=-1)
    for data in (_png(np.dstack([rgb, cutout]), "RGBA"), _png(np.dstack([gray, cutout]), "LA"),
                 _png(gray, "P", transparency=0)):  # a palette entry marked transparent
        with pytest.raises(tf.errors.InvalidArgumentError, match="image has transparent pixels: flatten it"):
            signature(image_bytes=tf.constant([_png(gray, "L"), data]))
    def scores(data):
        return signature(image_bytes=tf.constant([data]))["class_scores"].numpy()

    # an opaque alpha channel changes nothing
    np.testing.assert_array_equal(scores(_png(np.dstack([gray, opaque]), "LA")), scores(_png(gray, "L")))
    np.testing.assert_array_equal(scores(_png(np.dstack([rgb, opaque]), "RGBA")), scores(_png(rgb, "RGB")))
    # A 32-bit BMP's fourth byte is often 0 and unused: Pillow (and so `capszoo predict`) reads it
    # as RGB, and so does the graph, rather than refusing it as transparent.
    bmp = io.BytesIO()
    Image.fromarray(np.dstack([rgb, np.zeros_like(gray)]), "RGBA").save(bmp, format="BMP")
    assert tf.io.decode_image(bmp.getvalue()).shape[-1] == 4 and Image.open(bmp).mode == "RGB"
    np.testing.assert_allclose(scores(bmp.getvalue()), scores(_png(rgb, "RGB")), rtol=1e-5)


def test_served_photos_are_classified_upright_as_capszoo_predict_reads_them(tmp_path):
    from sklearn.datasets import load_digits

    import capszoo
    from capszoo.runs import load_image

    model = capszoo.load("ara-digits", compile=False)  # trained: its scores mean something
    signature = tf.saved_model.load(str(export_saved_model(model, tmp_path / "serving"))).signatures[
        "predict_image_bytes"]
    digits = load_digits()
    seven = digits.images[list(digits.target).index(7)]
    shown = np.kron(seven * 255 / 16, np.ones((4, 4))).astype(np.uint8)  # 32 x 32, light on black
    stored = np.ascontiguousarray(np.rot90(shown))  # a camera held sideways stores the pixels turned...

    def served(data):
        return signature(image_bytes=tf.constant([data]))["class_scores"].numpy()[0]

    def predicted(data, name):  # as `capszoo predict` reads the file
        (tmp_path / name).write_bytes(data)
        return model.predict(load_image(tmp_path / name, (28, 28, 1))[None], verbose=0)[0]

    photo = _with_exif(stored, "JPEG", 6)  # ...and says: turn 90 degrees clockwise to show it
    scores = served(photo)
    assert scores.argmax() == 7
    np.testing.assert_allclose(scores, predicted(photo, "photo.jpg"), atol=0.03)  # TF's and Pillow's JPEG decoders
    lossless = _with_exif(stored, "PNG", 6)
    np.testing.assert_allclose(served(lossless), predicted(lossless, "photo.png"), atol=0.005)  # Pillow's 8 bits
    np.testing.assert_allclose(served(lossless), served(_with_exif(shown, "PNG")), atol=1e-5)
    as_stored = served(_with_exif(stored, "JPEG"))  # what was served before, for this photo
    assert as_stored.argmax() != 7 and np.abs(as_stored - scores).max() > 0.2


@pytest.mark.parametrize("bad, message", [
    (np.zeros((2, 12, 12), np.float32), r"images must have shape \(batch, 12, 12, 1\); got shape.*2 12 12"),
    (np.zeros((2, 12, 12, 3), np.float32), r"images must have shape \(batch, 12, 12, 1\); got shape.*2 12 12 3"),
    (np.zeros((2, 14, 14, 1), np.float32), r"images must have shape \(batch, 12, 12, 1\); got shape.*2 14 14 1"),
    (np.full((1, 12, 12, 1), np.nan, np.float32), "images contain NaN or inf values"),
    (np.full((1, 12, 12, 1), 255.0, np.float32), r"images must be scaled to \[0, 1\]"),
])
def test_bad_inputs_fail_with_a_clear_error(exported, bad, message):
    _, models, _ = exported
    signature = tf.saved_model.load(str(models["dynamic"][1])).signatures["serving_default"]
    with pytest.raises((ValueError, TypeError, tf.errors.InvalidArgumentError), match=message):
        signature(images=tf.constant(bad))


def test_versions_are_not_overwritten_and_failures_leave_nothing(tmp_path, monkeypatch):
    model = VARIANTS["uniform"]()
    export_saved_model(model, tmp_path, name="m")
    with pytest.raises(ValueError, match="already exists: choose another --version, or pass --overwrite"):
        export_saved_model(model, tmp_path, name="m")
    assert export_saved_model(model, tmp_path, name="m", overwrite=True) == tmp_path / "m" / "1"
    import keras

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(type(keras.export.ExportArchive()), "write_out", broken)  # the backend's subclass
    with pytest.raises(RuntimeError, match="disk full"):
        export_saved_model(model, tmp_path, name="m", version=2)
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["1"]
    with pytest.raises(ValueError, match="version must be an integer >= 1"):
        export_saved_model(model, tmp_path, version=0)
    for bad in ("../m", ".m", "-m", 'a"b', "a b", "a\\b", "m/1", "m\n"):
        with pytest.raises(ValueError, match="invalid model name for TF Serving"):
            export_saved_model(model, tmp_path, name=bad)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def test_models_config_and_example_requests(exported, tmp_path):
    base, models, images = exported
    text = write_models_config(base, base_path="/models").read_text()
    assert text.startswith("model_config_list {")
    for name in models:
        assert f'name: "{name}"\n    base_path: "/models/{name}"' in text
    with pytest.raises(ValueError, match="no exported models"):
        write_models_config(tmp_path)
    with pytest.raises(ValueError, match="is not a folder of exported models"):
        write_models_config(tmp_path / "missing")
    with pytest.raises(ValueError, match="holds a quote, backslash or newline"):
        write_models_config(base, base_path='/models"x')
    foreign = tmp_path / "foreign"
    (foreign / 'a"b' / "1").mkdir(parents=True)  # a quote would end the name's string in the text format
    (foreign / 'a"b' / "1" / "saved_model.pb").touch()
    with pytest.raises(ValueError, match="invalid model name for TF Serving: 'a\"b'.*rename the folder"):
        write_models_config(foreign)
    assert not (foreign / "models.config").exists()
    body = example_request(image_bytes=[b"\x89PNG"])
    assert body == {"signature_name": "predict_image_bytes",
                    "instances": [{"image_bytes": {"b64": base64.b64encode(b"\x89PNG").decode()}}]}
    assert np.array(example_request(images=images)["instances"][0]["images"]).shape == (12, 12, 1)


def test_cli_export(tiny_config_path, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", str(tiny_config_path), "--out", str(run), "--epochs", "1", "--verbose", "0"]) == 0
    capsys.readouterr()
    out = tmp_path / "models"
    assert main(["export", str(run), "--out", str(out), "--version", "3", "--example-request",
                 "--models-config", str(out)]) == 0
    printed = capsys.readouterr().out.split()
    assert printed[0] == str(out / "tiny-digits" / "3")
    assert (out / "tiny-digits" / "request.json").is_file() and (out / "tiny-digits" / "request_b64.json").is_file()
    assert 'name: "tiny-digits"' in (out / "models.config").read_text()
    assert main(["export", str(run), "--out", str(out), "--version", "3"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["export"]) == 2
    assert "give a MODEL to export, or --models-config DIR" in capsys.readouterr().err


@pytest.mark.parametrize("signature", ["serving_default", "predict_image_bytes"])
def test_serving_latency_tool_smoke(tmp_path, signature):
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "latency.json"
    run = subprocess.run([sys.executable, str(root / "tools" / "serving_latency.py"), "--configs", "ara-digits",
                          "--batches", "1,4", "--repeats", "2", "--warmup", "1", "--json", str(out),
                          "--signature", signature],
                         capture_output=True, text=True, cwd=root, timeout=600,
                         env={**os.environ, "PYTHONPATH": str(root)})
    assert run.returncode == 0, run.stderr[-2000:]
    assert json.loads(out.read_text())["signature"] == signature and run.stdout.startswith(signature)
    rows = json.loads(out.read_text())["rows"]
    assert [(r["model"], r["batch"]) for r in rows] == [("ara-digits", 1), ("ara-digits", 4)]
    assert all(r["median_ms"] > 0 for r in rows) and "| ara-digits | 4 |" in run.stdout


def test_class_names_are_the_datasets_for_a_config_and_can_be_given(tmp_path):
    """The class_names output names the argmax: the dataset's names for a run or config (a
    Fashion-MNIST one here), the names given, else the ids; wrong names are refused."""
    from capszoo.config import load_config
    from capszoo.training import build_model, save_model_weights
    from tests.conftest import TINY_DIGITS_TOML

    config_path = tmp_path / "tiny-fashion.toml"
    config_path.write_text(TINY_DIGITS_TOML.replace('dataset = "digits"', 'dataset = "fashion_mnist"'))
    config = load_config(config_path)
    model = build_model(config, compile=False)
    save_model_weights(model, config, tmp_path / "tiny.weights.h5")
    images = np.random.default_rng(1).random((4, 12, 12, 1)).astype(np.float32)
    ids = model.predict(images, verbose=0).argmax(axis=1)
    fashion = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
               "Ankle boot")
    path = export_saved_model(config_path, tmp_path / "serving", weights=tmp_path / "tiny.weights.h5")
    out = tf.saved_model.load(str(path)).signatures["serving_default"](images=tf.constant(images))
    assert [n.decode() for n in out["class_names"].numpy()] == [fashion[k] for k in ids]
    assert json.loads((path / "assets" / "capszoo.json").read_text())["class_names"] == list(fashion)

    given = [f"class {k}" for k in range(10)]
    path = export_saved_model(model, tmp_path / "serving", name="given", class_names=given)
    out = tf.saved_model.load(str(path)).signatures["serving_default"](images=tf.constant(images))
    assert [n.decode() for n in out["class_names"].numpy()] == [given[k] for k in ids]
    for bad, message in [(given[:9], "class_names has 9 names for a model of 10 classes"),
                         ("0123456789", "class_names must be a list of non-empty strings"),
                         ([*given[:9], ""], "class_names must be a list of non-empty strings"),
                         (list(range(10)), "class_names must be a list of non-empty strings")]:
        with pytest.raises(ValueError, match=message):
            export_saved_model(model, tmp_path / "serving", name="bad", class_names=bad)
    assert not (tmp_path / "serving" / "bad").exists()


def test_a_model_from_capszoo_load_exports_under_its_entry_with_its_class_names(tmp_path):
    # It was exported as "ara_fashion_mnist" (the Keras name) with class_names "0".."9": the model
    # object did not know the entry it came from.
    import capszoo

    model = capszoo.load("ara-fashion-mnist", weights=None, compile=False)
    path = export_saved_model(model, tmp_path / "serving")
    assert path == tmp_path / "serving" / "ara-fashion-mnist" / "1"
    assert json.loads((path / "assets" / "capszoo.json").read_text())["class_names"] == list(
        capszoo.class_names("ara-fashion-mnist"))
    assert capszoo.class_names("ara-fashion-mnist")[0] == "T-shirt/top"
