#!/usr/bin/env bash
# Runs inside the dev container once it is created (postCreateCommand): the same set-up as `make run`,
# plus what only the container needs.
set -euo pipefail
cd "$(dirname "$0")/.."

# The project's .venv with the library, the modules' requirements, the emulator and the dev tools.
make setup
# iotedgedev in its own environment (it pins old dependencies) for `make genconfig` and the manifest tests.
make iotedgedev-setup

# The VS Code Azure IoT Edge extension and iotedgedev read .env beside the deployment templates.
if [[ -f .env && ! -e iot-edge-solution/.env ]]; then
    ln -s ../.env iot-edge-solution/.env
fi

# NVIDIA stages: pycuda for the TensorRT engine, built against the container's CUDA. numpy stays below 2
# because JetPack's TensorRT bindings and Ubuntu's GStreamer-enabled cv2 are built against numpy 1.x.
if [[ "${CUDA_SUPPORT:-nocuda}" == "cuda" ]]; then
    LIBRARY_PATH=/usr/local/cuda/lib64/stubs .venv/bin/python -m pip install --quiet "numpy>=1.24,<2" "pycuda==2024.1.2"
    .venv/bin/python -c "import tensorrt, pycuda.driver; print('TensorRT', tensorrt.__version__)"
fi

echo "post-create: ready. Try: make run | make test | make lint"
