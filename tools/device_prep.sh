#!/usr/bin/env bash
# Ready this working tree for a lent GPU machine (tools/device_train.sh runs there), and undo it.
#
#   bash tools/device_prep.sh on FILE.npz [FILE2.npz]   before the first device call
#   bash tools/device_prep.sh off                       after the last one, before any commit
#
# `on` downloads the keras, optree and namex wheels the machine's Python 3.12 needs into .whl/
# (the versions this checkout's .venv has), copies FILE.npz from $CAPSZOO_DATA_DIR (default
# ../shared/datasets) into .devdata/ and FILE2.npz into .devdata2/ (device_train.sh: DEVDATA),
# and takes saved_models/*/model.weights.h5 out of git's index, with an exclude line, so that the
# tree the run tool copies stays under its 64 MiB (the weights are 300 MB; a --from-zoo run names
# its one file in `carry`). Name .whl and .devdata* in `carry`. `off` puts the weights back in the
# index and drops the exclude line; nothing is committed in between.
set -euo pipefail
cd "$(dirname "$0")/.."
EXCLUDE=/saved_models/*/model.weights.h5
mode=${1:-}
shift || true

case $mode in
on)
    [ $# -ge 1 ] || { echo "usage: $0 on FILE.npz [FILE2.npz]" >&2; exit 2; }
    data=${CAPSZOO_DATA_DIR:-../shared/datasets}
    for file in "$@"; do
        [ -f "$data/$file" ] || { echo "$data/$file does not exist (set CAPSZOO_DATA_DIR)" >&2; exit 2; }
    done
    version() { .venv/bin/python -c "import importlib.metadata as m; print(m.version('$1'))"; }
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d .whl "keras==$(version keras)" "optree==$(version optree)" "namex==$(version namex)"
    suffix=""
    for file in "$@"; do
        rm -rf ".devdata$suffix" && mkdir -p ".devdata$suffix" && cp "$data/$file" ".devdata$suffix/"
        suffix=$(( ${suffix:-1} + 1 ))
    done
    mkdir -p .git/info
    grep -qxF "$EXCLUDE" .git/info/exclude 2>/dev/null || echo "$EXCLUDE" >> .git/info/exclude
    git rm -r -q --cached --ignore-unmatch saved_models/*/model.weights.h5
    du -sh .whl .devdata* | sed 's/^/carry: /'
    ;;
off)
    if [ -f .git/info/exclude ]; then
        grep -vxF "$EXCLUDE" .git/info/exclude > .git/info/exclude.new || true
        mv .git/info/exclude.new .git/info/exclude
    fi
    git reset -q -- saved_models
    git status --short saved_models
    ;;
*)
    echo "usage: $0 on FILE.npz [FILE2.npz] | off" >&2
    exit 2
    ;;
esac
