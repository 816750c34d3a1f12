#!/usr/bin/env bash
# The TensorRT checks that need an NVIDIA GPU, as one prepared run (TensorRT >= 8.5 and pycuda installed, e.g. in
# the GPU dev container or on a Jetson): the SDK check, the engine contract suite for the tensorrt backend (the
# real engine, real CUDA contexts across threads), then bench/tensorrt_bench.py (TensorRT vs ONNX Runtime on the
# same machine, FP16 vs FP32, cold build vs cached load). Results go to $OUT (default: the current folder).
#   bench/tensorrt_gpu_check.sh            PYTHON=.venv/bin/python OUT=. FRAMES=600 MODEL=efficientnet-lite0
set -euo pipefail
py="${PYTHON:-.venv/bin/python}"
out="${OUT:-.}"
mkdir -p "$out"
# Fails (status 1, with the reason) where TensorRT or pycuda is missing, instead of letting the suite skip.
"$py" -m edgevision.engines.tensorrt_engine | tee "$out/tensorrt-sdk.txt"
"$py" -m pytest iot-edge-solution/libs/edgevision/tests/contract -m tensorrt -q -rs -p no:cacheprovider \
    --junitxml "$out/tensorrt-contract.xml"
"$py" bench/tensorrt_bench.py --model "${MODEL:-efficientnet-lite0}" --frames "${FRAMES:-600}" \
    | tee "$out/tensorrt-bench.json"
