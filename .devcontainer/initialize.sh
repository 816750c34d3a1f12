#!/usr/bin/env bash
# Runs on the host (initializeCommand) before the dev container is built or started.
# 1. Creates the repository's .env from .env_template on first use (.env is git-ignored: secrets stay local).
# 2. Writes .devcontainer/.env, the variables docker-compose.yml reads: TARGETARCH and CUDA_SUPPORT as set in
#    .env, else this machine's architecture and no CUDA.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"

if [[ ! -f "$root/.env" ]]; then
    cp "$root/.env_template" "$root/.env"
    echo "initialize: created .env from .env_template"
fi

read_var() {  # the last `NAME=value` of .env, quotes removed; empty when absent
    sed -n "s/^[[:space:]]*$1[[:space:]]*=[[:space:]]*//p" "$root/.env" | tail -n 1 | tr -d "\"'\r"
}

arch="$(read_var TARGETARCH)"
if [[ -z "$arch" ]]; then
    case "$(uname -m)" in
        aarch64 | arm64) arch=arm64 ;;
        *) arch=amd64 ;;
    esac
fi
cuda="$(read_var CUDA_SUPPORT)"
cuda="${cuda:-nocuda}"

case "$arch/$cuda" in
    amd64/nocuda | amd64/cuda | arm64/nocuda | arm64/cuda) ;;
    *)
        echo "initialize: TARGETARCH must be amd64 or arm64 and CUDA_SUPPORT cuda or nocuda (got $arch, $cuda)" >&2
        exit 1
        ;;
esac

printf '# Written by initialize.sh from ../.env; edit ../.env instead.\nTARGETARCH=%s\nCUDA_SUPPORT=%s\n' \
    "$arch" "$cuda" > "$root/.devcontainer/.env"
echo "initialize: dev container stage base-$arch-$cuda"
