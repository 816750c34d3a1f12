#!/usr/bin/env bash
# `make lock`: one set of pinned versions, with hashes, for .venv, every module image and every dev container
# flavour. uv resolves once for Python 3.10-3.12 on every platform (--universal: markers where wheels differ);
# each image's file is resolved with lock.txt as constraints, so it holds the same versions, only fewer of them.
#   requirements/lock.in            -> requirements/lock.txt            (.venv: make setup)
#   iot-edge-solution/requirements/<name>.in -> <name>.txt  (module images, dev container: inside the modules'
#                                                            build context, iot-edge-solution/)
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
UV="${UV:-$ROOT/.venv/bin/uv}"
export UV_PYTHON_DOWNLOADS=never
# The projects of this repository come from the working tree, never from the lock.
LOCAL=(--no-emit-package edgevision --no-emit-package edgevision-frontend --no-emit-package edgehub-emulator
  --no-emit-package solution-testkit)
compile() {
  "$UV" pip compile --quiet --universal --python-version 3.10 --generate-hashes --no-header "${LOCAL[@]}" \
    --custom-compile-command "make lock" "$@"
}
# `-e` paths in an .in file are relative to the folder uv runs in, `-r` paths to the file.
cd "$ROOT/requirements"
compile lock.in -o lock.txt
cd "$ROOT/iot-edge-solution/requirements"
# onnxruntime declares sympy (and mpmath), which only its model tools import, never an inference session: the
# classifier's images leave out those 86 MB (images_check.py runs the model in the image without them).
NOT_IN_CLASSIFIER=(--no-emit-package sympy --no-emit-package mpmath)
for input in *.in; do
  extra=()
  [[ "$input" == classifier* ]] && extra=("${NOT_IN_CLASSIFIER[@]}")
  compile --constraint "$ROOT/requirements/lock.txt" "${extra[@]}" "$input" -o "${input%.in}.txt"
done
