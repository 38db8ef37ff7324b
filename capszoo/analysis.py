"""Routing analysis from the two papers, as numbers (pandas) and figures (matplotlib, headless).

- :func:`energy`: the energy Ψ(C) = −Σ_j ψ(|Σ_i c_ij û_j|i|), ψ(z) = z − arctan z, that dynamic
  routing minimises, per iteration, in total and per output capsule (objective-function paper,
  Fig. 1). It never increases; the frame says whether it ever did.
- :func:`distribution`: the 2-D experiment: predictions û_j|i of 2-D output capsules, coloured by
  output capsule and sized by their final coupling, with the v_j after 20 iterations (Fig. 2).
- :func:`couplings`: polarization of c_ij over iterations (mean row entropy, mean largest
  coupling, share of couplings near 0 or 1) and the 50 largest couplings into the correct class
  capsule (adaptive-routing paper, Fig. 2).
- :func:`gradients`: the gradient of the margin loss at the first convolution for CapsNet2/3/4
  with dynamic vs λ-routing on one real batch (adaptive-routing paper, Fig. 3 vs Fig. 6).
- :func:`activity` and :func:`diagnose`: why a trained network sits at chance. Either its class
  capsules have no length (squash of near-zero sums: the gradient starvation the adaptive-routing
  paper's Table 4 shows for small λ), all of them are saturated near length 1, or its first
  convolution's ReLUs died early in training.

Routing traces run the project's own :class:`capszoo.routing.DynamicRouting` (with
``return_state=True``) on a capsule layer's predictions: for a trained model, on its layer's
kernel and real images, whatever routing the model was trained with.
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
from keras import ops

from capszoo.ops import check_labels, routing_energy
from capszoo.routing import DynamicRouting
from capszoo.routing.base import check_count, check_iterations

NEAR = 0.01  # a coupling within this of 0 or 1 counts as polarized


def _np(x):
    return np.asarray(keras.ops.convert_to_numpy(x))


# ---- routing traces ----

def trace_layer(layer, inputs, iterations):
    """Dynamic routing for ``iterations`` on a :class:`CapsuleLayer`'s kernel and its ``inputs``
    capsules; the state dict of :class:`DynamicRouting` as NumPy arrays."""
    _, state = DynamicRouting(iterations)(ops.convert_to_tensor(inputs), layer.kernel, return_state=True)
    return {k: _np(v) for k, v in state.items()}


def trace_predictions(predictions, iterations):
    """Dynamic routing on given predictions ``(batch, n_in, n_out, d)`` (random ones, say).

    Each example is routed with inputs of ones and the kernel set to its predictions, so that
    ``û_j|i = W_ij · 1`` are exactly the given vectors; the states are stacked over the batch.
    """
    predictions = np.asarray(predictions, dtype="float32")
    if predictions.ndim != 4 or 0 in predictions.shape:
        raise ValueError(f"predictions must be (batch, n_in, n_out, d), none of them 0, got shape {predictions.shape}")
    routing = DynamicRouting(iterations)
    states = []
    for example in predictions:
        kernel = ops.convert_to_tensor(example[:, None])  # (n_in, 1, n_out, d)
        _, state = routing(ops.ones((1, example.shape[0], 1)), kernel, return_state=True)
        states.append({k: _np(v) for k, v in state.items()})
    axis = {"predictions": 0, "couplings": 1, "logits": 1, "outputs": 1}
    return {k: np.concatenate([s[k] for s in states], axis=axis[k]) for k in states[0]}


def _images(model, images):
    """``images`` (an array, tensor or nested list) as a float32 tensor, after the checks the
    model's ``predict`` makes: shape, a float dtype, no NaN/inf, values in [0, 1]. A trace of
    8-bit pixels or NaN images would otherwise be plotted as if it were the model's."""
    images = np.asarray(ops.convert_to_numpy(images) if ops.is_tensor(images) else images)
    model._check_values(images, empty_ok=True)
    return ops.convert_to_tensor(images.astype("float32"))


def _layer_inputs(model, images, layer):
    """The input capsules of capsule layer ``layer`` of a CapsNet for ``images``."""
    layers = model.capsule_layers
    if not -len(layers) <= layer < len(layers):
        raise ValueError(f"layer {layer} out of range: the model has {len(layers)} capsule layer(s)")
    caps = model.capsules(_images(model, images))
    index = layer % len(layers)
    return layers[index], caps[index]


def model_trace(model, images, iterations=20, layer=-1):
    """Dynamic-routing state of a CapsNet's capsule layer ``layer`` (default: the class capsules)
    on ``images``, routed for ``iterations``."""
    check_iterations(iterations)  # before the forward pass
    if len(images) == 0:
        raise ValueError("model_trace needs at least one image, got none")
    capsule_layer, inputs = _layer_inputs(model, images, layer)
    return trace_layer(capsule_layer, inputs, iterations)


# ---- energy ----

def energy(state):
    """Per-iteration energy of a routing ``state`` (from the trace functions), averaged over the
    batch: columns ``iteration``, ``total`` and ``capsule_J`` for each output capsule. The frame's
    ``attrs["ever_increased"]`` says whether the total of any example rose from one iteration to
    the next (beyond float32 round-off)."""
    import pandas as pd

    predictions = ops.convert_to_tensor(state["predictions"])
    per_capsule = np.stack([_np(routing_energy(ops.convert_to_tensor(c), predictions, per_capsule=True))
                            for c in state["couplings"]])  # (iterations, batch, n_out)
    totals = per_capsule.sum(axis=-1)  # (iterations, batch)
    frame = pd.DataFrame({"iteration": np.arange(1, len(totals) + 1), "total": totals.mean(axis=1)})
    for j in range(per_capsule.shape[-1]):
        frame[f"capsule_{j}"] = per_capsule[:, :, j].mean(axis=1)
    steps = np.diff(totals, axis=0)
    tolerance = 1e-5 * np.maximum(1.0, np.abs(totals[:-1]))
    frame.attrs["ever_increased"] = bool(np.any(steps > tolerance))
    return frame


def plot_energy(frame, path, title="Routing energy Ψ(C) per iteration"):
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    left.plot(frame.iteration, frame.total, marker="o", label="Ψ total (mean over examples)")
    left.set(title="Total energy", xlabel="routing iteration", ylabel="Ψ(C)")
    left.legend()
    capsules = [c for c in frame.columns if c.startswith("capsule_")]
    for column in capsules[:20]:
        right.plot(frame.iteration, frame[column], label=column.replace("capsule_", "j = "))
    right.set(title="Per output capsule", xlabel="routing iteration", ylabel="−ψ(|s_j|)")
    right.legend(fontsize="x-small", ncol=2)
    verdict = "ever increased" if frame.attrs.get("ever_increased") else "never increased"
    fig.suptitle(f"{title} (Ψ {verdict})")
    return _save(fig, path)


# ---- the 2-D distribution experiment ----

def random_predictions(batch=1, n_in=64, n_out=3, dim=2, seed=0, clusters=True):
    """Random predictions ``(batch, n_in, n_out, dim)``. With ``clusters``, each output capsule's
    predictions scatter around a random centre, so that routing has agreement to find."""
    sizes = {"batch": batch, "n_in": n_in, "n_out": n_out, "dim": dim}
    batch, n_in, n_out, dim = (check_count(f"random predictions: {name}", value) for name, value in sizes.items())
    rng = np.random.default_rng(seed)
    noise = rng.normal(scale=0.5, size=(batch, n_in, n_out, dim))
    if not clusters:
        return noise.astype("float32")
    centres = rng.normal(scale=1.0, size=(batch, 1, n_out, dim))
    return (centres + noise).astype("float32")


def distribution(n_in=64, n_out=3, iterations=20, seed=0):
    """The 2-D experiment: route random 2-D predictions for ``iterations``; returns a frame with
    one row per prediction (``i``, ``j``, ``x``, ``y``, final coupling ``c``) and the routing state."""
    import pandas as pd

    check_iterations(iterations)  # before the forward pass
    state = trace_predictions(random_predictions(1, n_in, n_out, 2, seed), iterations)
    u_hat, final = state["predictions"][0], state["couplings"][-1, 0]
    i, j = np.meshgrid(np.arange(n_in), np.arange(n_out), indexing="ij")
    frame = pd.DataFrame({"i": i.ravel(), "j": j.ravel(), "x": u_hat[..., 0].ravel(), "y": u_hat[..., 1].ravel(),
                          "c": final.ravel()})
    return frame, state


def plot_distribution(frame, state, path):
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 6))
    outputs = state["outputs"][-1, 0]
    colors = plt.get_cmap("tab10")
    for j, group in frame.groupby("j"):
        ax.scatter(group.x, group.y, s=8 + 60 * group.c, alpha=0.6, color=colors(j % 10),
                   label=f"û_{j}|i (size: final c_i{j})")
        ax.scatter(*outputs[j], marker="*", s=300, color=colors(j % 10), edgecolor="black",
                   label=f"v_{j} after {state['couplings'].shape[0]} iterations")
    ax.set(title="Dynamic routing of 2-D predictions", xlabel="dimension 1", ylabel="dimension 2")
    ax.legend(fontsize="x-small")
    return _save(fig, path)


# ---- coupling polarization ----

def polarization(state):
    """Per iteration: mean row entropy of C (in nats, and divided by log n_out), mean largest
    coupling per row, and the share of couplings within 0.01 of 0 or of 1. Where the state has
    them: ``logit_spread``, the mean over input capsules of max_j b_ij - min_j b_ij (the logits
    behind that iteration's couplings: 0 at the first, then the summed agreements û·v), and
    ``output_length``, the mean |v_j| routed with them. Couplings stay near 1/n_out when the
    spread stays small, as it does where predictions and outputs are short."""
    import pandas as pd

    c = np.clip(state["couplings"], 1e-12, 1.0)  # (iterations, batch, n_in, n_out)
    n_out = c.shape[-1]
    entropy = -(c * np.log(c)).sum(axis=-1).mean(axis=(1, 2))
    frame = pd.DataFrame({
        "iteration": np.arange(1, c.shape[0] + 1),
        "entropy": entropy,
        "entropy_normalized": entropy / np.log(n_out) if n_out > 1 else entropy,
        "max_coupling": c.max(axis=-1).mean(axis=(1, 2)),
        "near_0_or_1": ((c < NEAR) | (c > 1 - NEAR)).mean(axis=(1, 2, 3)),
    })
    if "logits" in state:
        b = state["logits"]  # (iterations, batch, n_in, n_out)
        frame["logit_spread"] = (b.max(axis=-1) - b.min(axis=-1)).mean(axis=(1, 2))
    if "outputs" in state:
        frame["output_length"] = np.linalg.norm(state["outputs"], axis=-1).mean(axis=(1, 2))
    return frame


def prediction_lengths(state):
    """Mean and largest |û_j|i| of a routing state: the scale of the agreements û·v."""
    lengths = np.linalg.norm(state["predictions"], axis=-1)
    return float(lengths.mean()), float(lengths.max())


def top_couplings(state, labels, top=50):
    """The ``top`` largest final couplings c_ij into each example's correct class capsule j."""
    top = check_count("top_couplings: top", top)
    final = state["couplings"][-1]  # (batch, n_in, n_out)
    labels = check_labels(np.asarray(labels), final.shape[-1], "top_couplings")  # -1 picked the last class
    if len(labels) != len(final):
        raise ValueError(f"top_couplings: {len(labels)} labels for a routing state of {len(final)} images")
    into_label = final[np.arange(len(labels)), :, labels]  # (batch, n_in)
    top = min(top, into_label.shape[1])
    return np.sort(into_label, axis=1)[:, -top:]


def plot_couplings(frame, largest, path, n_out):
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    left.plot(frame.iteration, frame.entropy_normalized, marker="o", label="mean row entropy / log n_out")
    left.plot(frame.iteration, frame.max_coupling, marker="s", label="mean largest coupling")
    left.plot(frame.iteration, frame.near_0_or_1, marker="^", label=f"share within {NEAR} of 0 or 1")
    left.set(title="Polarization of the couplings", xlabel="routing iteration", ylabel="value", ylim=(-0.02, 1.02))
    left.legend(fontsize="small")
    right.hist(largest.ravel(), bins=np.linspace(0.0, 1.0, 51), color="tab:blue",
               label=f"{largest.shape[1]} largest per image")
    right.axvline(1.0 / n_out, color="tab:red", linestyle="--", label=f"uniform 1/{n_out}")
    right.set(title="Largest couplings into the correct class capsule", xlabel="c_ij", ylabel="count")
    right.legend(fontsize="small")
    return _save(fig, path)


# ---- gradients at the first convolution ----

def conv_gradient(model, images, labels, loss=None):
    """Gradient of the margin loss (mean over the batch) with respect to the first convolution's
    kernel, as a NumPy array, on the TensorFlow, JAX or PyTorch backend. For a model with dict
    outputs (``decoder``, ``return_capsules``) the loss is that of its ``class_scores``."""
    from capszoo.ops import MarginLoss

    margin = loss or MarginLoss()

    def loss(y, outputs):
        return margin(y, outputs["class_scores"] if isinstance(outputs, dict) else outputs)

    images = _images(model, images)
    labels = ops.convert_to_tensor(check_labels(np.asarray(labels), model.model_config.num_classes, model.name))
    if labels.shape[0] != images.shape[0]:
        raise ValueError(f"{model.name}: {images.shape[0]} images but {labels.shape[0]} labels")
    kernel = model.conv.kernel
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            value = loss(labels, model(images))
        return _np(tape.gradient(value, kernel.value))
    if backend == "jax":
        import jax

        trainable = [v.value for v in model.trainable_variables]
        non_trainable = [v.value for v in model.non_trainable_variables]
        index = next(k for k, v in enumerate(model.trainable_variables) if v is kernel)

        def compute(values):
            scores, _ = model.stateless_call(values, non_trainable, images)
            return loss(labels, scores)

        return _np(jax.grad(compute)(trainable)[index])
    if backend == "torch":
        model.zero_grad()
        value = loss(labels, model(images))
        value.backward()
        return kernel.value.grad.detach().cpu().numpy()
    raise ValueError(f"gradients are not implemented for the {backend!r} backend")


def gradients(config, images, labels, depths=(2, 3, 4), routings=("dynamic", "adaptive_lambda"), seed=0):
    """First-convolution gradients of freshly initialised CapsNet2/3/4 built from ``config``'s
    model (its routing settings, widths, and the papers' intermediate capsules) with each routing.

    Every model is initialised with the same seed, so all of them start from the same convolution
    kernel; the gradient differs only through the capsule layers above it. Returns ``(frame,
    grads)``: one row per (depth, routing) with the gradient's norm, mean |g|, std, min, max and
    the share of exact zeros, and ``ratio_to_dynamic`` (norm over the dynamic model's norm at the
    same depth); ``grads`` maps ``(depth, routing)`` to the flat gradient.
    """
    import pandas as pd

    from capszoo.config import load_config
    from capszoo.models import CapsNet

    base = load_config(config).model
    rows, grads = [], {}
    for depth in depths:
        deeper = base.with_depth(depth)
        for routing in routings:
            model_config = deeper.replace(routing=routing)
            keras.utils.set_random_seed(seed)
            model = CapsNet(model_config)
            g = conv_gradient(model, images, labels).ravel()
            grads[(depth, routing)] = g
            rows.append({"depth": depth, "routing": routing, "norm": float(np.linalg.norm(g.astype("float64"))),
                         "mean_abs": float(np.abs(g).mean()), "std": float(g.std()), "min": float(g.min()),
                         "max": float(g.max()), "zero_share": float(np.mean(g == 0))})
            del model
    frame = pd.DataFrame(rows)
    dynamic = frame[frame.routing == "dynamic"].set_index("depth").norm
    frame["ratio_to_dynamic"] = [row.norm / dynamic[row.depth] if row.depth in dynamic.index and dynamic[row.depth]
                                 else np.nan for row in frame.itertuples()]
    return frame, grads


def plot_gradients(frame, grads, path):
    plt = _pyplot()
    depths = sorted(frame.depth.unique())
    fig, axes = plt.subplots(1, len(depths), figsize=(4.5 * len(depths), 4), squeeze=False)
    for ax, depth in zip(axes[0], depths, strict=True):
        for routing in frame[frame.depth == depth].routing:
            g = np.abs(grads[(depth, routing)])
            g = g[g > 0]
            if g.size:
                ax.hist(np.log10(g), bins=60, alpha=0.6, label=f"{routing}")
        ax.set(title=f"CapsNet{depth}: first-conv gradients", xlabel="log10 |∂L/∂w|", ylabel="count")
        ax.legend(fontsize="small")
    fig.suptitle("Gradient at the first convolution, one batch, same initial weights")
    return _save(fig, path)


# ---- why a network collapsed ----

DEAD_RELU = 0.01  # below this share of positive first-conv outputs, the ReLUs count as dead
NO_LENGTH = 0.01  # class capsules all shorter than this carry no signal
SATURATED = 0.9  # class capsules this long on average: every class lit, squash saturated


def activity(model, images):
    """What a CapsNet's forward pass looks like on ``images``: ``relu_active``, the share of the
    first convolution's outputs that are positive (0: every ReLU dead, so no gradient reaches the
    convolution), and the class-capsule lengths' ``length_mean`` and ``length_max``."""
    images = _images(model, images)
    capsules = model.capsules(images)
    features = _np(model.conv(images))
    lengths = np.linalg.norm(_np(capsules[-1]).astype("float64"), axis=-1)
    return {"relu_active": float(np.mean(features > 0)), "length_mean": float(lengths.mean()),
            "length_max": float(lengths.max())}


def diagnose(accuracy, stats, classes=10):
    """One word on a trained network: ``trains`` (accuracy at least twice chance), else which
    collapse: ``ReLUs dead`` (:data:`DEAD_RELU`), ``no length`` (every class capsule shorter than
    :data:`NO_LENGTH`: the small-λ starvation), ``saturated`` (class capsules :data:`SATURATED`
    long on average: every class lit, where squash passes almost no gradient) or plain
    ``collapsed``. ``stats`` is :func:`activity`'s."""
    if accuracy >= 2.0 / classes:
        return "trains"
    if stats["relu_active"] < DEAD_RELU:
        return "collapsed: ReLUs dead"
    if stats["length_max"] < NO_LENGTH:
        return "collapsed: no length"
    if stats["length_mean"] > SATURATED:
        return "collapsed: saturated"
    return "collapsed"


# ---- figures ----

def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path
