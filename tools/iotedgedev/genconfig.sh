#!/usr/bin/env bash
# Expand iot-edge-solution/deployment*.template.json into deployment manifests with iotedgedev, offline.
#   tools/iotedgedev/genconfig.sh [PLATFORM] [TEMPLATE]...
# PLATFORM: amd64 (default: DEFAULT_PLATFORM from .env) | amd64.gpu | arm64v8. TEMPLATE: default both templates.
# Variables come from .env (or .env_template when there is none yet), exactly as in `iotedgedev genconfig`.
# Output: iot-edge-solution/$CONFIG_OUTPUT_DIR (default config/), e.g. config/deployment.arm64v8.json.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
venv="${IOTEDGEDEV_VENV:-$root/.venv-iotedgedev}"
# A relative IOTEDGEDEV_VENV is relative to where the script was started, not to the folder it changes to.
[[ "$venv" == /* ]] || venv="$PWD/$venv"
if [[ ! -x "$venv/bin/iotedgedev" ]]; then
    echo "genconfig: $venv/bin/iotedgedev is missing; run 'make iotedgedev-setup'" >&2
    exit 2
fi

dotenv="${DOTENV_FILE:-}"
if [[ -z "$dotenv" ]]; then
    dotenv="$root/.env"
    [[ -f "$dotenv" ]] || dotenv="$root/.env_template"
fi
platform="${1:-}"
shift || true
templates=("$@")
[[ ${#templates[@]} -gt 0 ]] || templates=(deployment.template.json deployment.debug.template.json)

# iotedgedev asks about telemetry on first use and would send some: answer "no" in a private HOME.
home="$venv/home"
mkdir -p "$home/.iotedgedev"
printf '[DEFAULT]\nfirsttime = no\ncollect_telemetry = no\n' > "$home/.iotedgedev/setting.ini"

cd "$root/iot-edge-solution"
for template in "${templates[@]}"; do
    args=(solution genconfig --file "$template" --fail-on-validation-error)
    [[ -z "$platform" ]] || args+=(--platform "$platform")
    HOME="$home" DOTENV_FILE="$dotenv" "$venv/bin/iotedgedev" "${args[@]}"
done
