#!/usr/bin/env bash
# Train zoo entries on a lent GPU machine that has JAX but neither TensorFlow nor Keras nor internet.
#
#   bash tools/device_train.sh start SECONDS NAME [NAME...]   launch, detached, and return at once
#   bash tools/device_train.sh collect NAME [NAME...]         wait for those runs, pack them into $OUT
#   TRAIN_ARGS=--from-zoo bash tools/device_train.sh start ...  more `capszoo train` options for every run
#     (--from-zoo continues a published entry: carry its saved_models/NAME/model.weights.h5, below)
#
# Run from the repository root on that machine, with beside it (carried, git-ignored):
#   .whl/                  keras, optree and namex wheels for its Python (README, "Training on a GPU")
#   $DEVDATA (.devdata/)   the offline .npz files the entries need (CAPSZOO_DATA_DIR)
# `start` trains every NAME at once on the one GPU, each with `capszoo train --time-limit SECONDS`
# (JAX backend, NumPy input pipeline) in its own session, so that a run outlives the command that
# started it as long as the machine is held; a later `collect` picks it up. `collect` packs each run
# folder without its checkpoints into $OUT as 15 MiB pieces (runs-FIRSTNAME.tar.00, .01, ...) and
# every log, config and history into meta.tar. Join them here with
# `cat runs-FIRSTNAME.tar.* | tar x -C runs/`, then `capszoo publish runs/zoo-NAME`, which
# re-evaluates the weights on this machine before it writes the card.
#
# Learnt on an H100 (2026-11-22):
# - The tree that travels is limited to 64 MiB and saved_models/ is larger: before the calls
#   `bash tools/device_prep.sh on FILE.npz [FILE2.npz]` (wheels, data, the weights out of git's
#   index), after them `bash tools/device_prep.sh off`; commit nothing in between. To continue an
#   entry with TRAIN_ARGS=--from-zoo, name its saved_models/NAME/model.weights.h5 in `carry`.
# - The machine is given back 30 s after a call ends, and detached runs die with it: have the
#   next call ready before the previous one returns.
# - Five runs at once kept CIFAR-10 epochs at 8-17 s; nine made them 50 s (the first, compiling,
#   200 s), and --time-limit, judged by the longest epoch, then stops a run early.
# - Fashion-MNIST/MNIST, 2026-11-23: six runs at once took 10 s (ARA) and 15 s (DRA) per epoch,
#   two at once 5-6 s; 1,683 of the 1,800 s budget went on 7 calls (start + collect can share one).
# - Third loan, 2026-11-23: six Fashion-MNIST runs beside one CIFAR-10 run took 12-14 s per
#   Fashion epoch and 38-45 s per CIFAR epoch (its first, compiling, 157 s); CIFAR alone took 8 s.
#   --time-limit then kept the longest epoch, the compiling first, in reserve and stopped that run
#   at 1,149 of 1,300 s; it now leaves the first epoch out once a later one has ended.
# - A call returns at most 64 MiB: one set of Fashion-MNIST weights (27 MB) per collect next to
#   other files, so choose on validation inside the call (PACK=NAME).
# - Fourth loan, 2026-12-06 (15 minutes, 745 s held): two 80-epoch Fashion-MNIST runs at once took
#   4 s an epoch (the first 27-28 s), 316-325 s in all; CIFAR-10 alone 5 s (the first 26 s). Start
#   and collect in one call (PACK=rule:SCRIPT chooses after the runs end); a second call made
#   within the 30 s found the machine still warm, with /tmp/site and /tmp/runs in place.
set -u
mode=$1
shift
runs=/tmp/runs
out=${OUT:-/tmp/out}
mkdir -p "$out" "$runs"
if [ ! -d /tmp/site/keras ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        .whl/*.whl || exit 1
fi
export PYTHONPATH=/tmp/site:$PWD KERAS_BACKEND=jax PYTHONUNBUFFERED=1
export CAPSZOO_DATA_DIR=$PWD/${DEVDATA:-.devdata}
export XLA_PYTHON_CLIENT_PREALLOCATE=false  # several trainings share the GPU

case $mode in
start)
    limit=$1
    shift
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    python3 -c "import jax, keras; print('jax', jax.__version__, jax.devices(), 'keras', keras.__version__)" || exit 1
    for name in "$@"; do
        config=${name#*=}  # NAME, or RUN=CONFIG.toml for a config file under the run name RUN
        name=${name%%=*}
        # The run is over when NAME.rc exists (its exit status).
        setsid nohup bash -c "timeout $((${limit%.*} + 300)) python3 -m capszoo train $config --out $runs/zoo-$name \
            --time-limit $limit --verbose 2 ${TRAIN_ARGS:-} >$runs/$name.log 2>&1; echo \$? >$runs/$name.rc" \
            >/dev/null 2>&1 &
        echo "started $name (time limit ${limit} s)"
    done
    ;;
collect)
    ticks=0
    for name in "$@"; do
        while [ ! -f "$runs/$name.rc" ]; do
            sleep 5
            ticks=$((ticks + 1))
            if [ $((ticks % 12)) -eq 0 ]; then
                nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader
                tail -qn 1 "$runs"/*.log
            fi
        done
        echo "$name exited with $(cat "$runs/$name.rc")"
    done
    # Every run's logs, configs, histories and metrics (small); the weights only of $PACK
    # (default: all NAMEs), or of `best:A,B,...`: the run among A, B, ... with the highest final
    # val_accuracy (among those that trained all their planned epochs), so that a sweep sends back
    # one set of weights chosen on validation data;
    # `none` (what a choosing rule prints when nothing qualifies) sends back no weights;
    # `rule:SCRIPT`: what that choosing rule prints once every run has ended (a run name or none).
    (cd "$runs" && tar cf "$out/meta.tar" --exclude=checkpoints --exclude=model.weights.h5 *.log zoo-*)
    pack=""
    for item in ${PACK:-$*}; do
        case $item in
        rule:*) rule=${item#rule:}
            item=$(python3 "$rule") || { echo "the rule $rule failed: no weights are packed"; continue; }
            [ "$item" = none ] && { echo "the rule chose none: no weights are packed"; continue; } ;;
        none) continue ;;
        best:*) chosen=$(python3 "$(dirname "$0")/best_run.py" $(echo "${item#best:}" | tr , '\n' | sed "s|^|$runs/zoo-|")) ||
            { echo "$item: none of these runs trained all its planned epochs, so none is packed"; continue; }
            item=$chosen ;;
        esac
        pack="$pack zoo-${item#zoo-}"
    done
    echo "packing:${pack:- nothing}"
    if [ -n "$pack" ]; then
        (cd "$runs" && tar cf - --exclude=checkpoints $pack) | split -b 15M -d - "$out/runs-$1.tar."
    fi
    ls -la "$out"
    for log in "$runs"/*.log; do echo "== $log"; tail -n 2 "$log"; done
    ;;
*)
    echo "mode must be start or collect, got $mode" >&2
    exit 2
    ;;
esac
