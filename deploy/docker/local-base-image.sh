#!/usr/bin/env bash
# A local stand-in for python:3.11-slim, for building the Sift image without a container registry.
#
#   deploy/docker/local-base-image.sh [--force]
#
# Builds a Debian bookworm minbase root filesystem with debootstrap (bookworm's python3 is 3.11; plus
# python3-pip, python3-venv and ca-certificates), makes it look like python:3.11-slim where the Dockerfile
# cares, and commits it to local container storage (buildah) as localhost/python:3.11-slim, which the
# Dockerfile's `FROM python:3.11-slim` finds with `buildah bud --pull=never`. Skips the work when that image
# exists, unless --force. Needs root, buildah and debootstrap, and a Debian mirror (DEBIAN_MIRROR, default
# http://deb.debian.org/debian). About 1.5 minutes and 160 MB.
#
# Differences from python:3.11-slim that matter, and what is done about them:
# - python3 lives in /usr/bin and there is no `python`: /usr/bin/python -> python3 (the Dockerfile runs
#   `python`; `pip` is shipped by python3-pip).
# - Debian marks its python3 EXTERNALLY-MANAGED (PEP 668), so `pip install` into it is refused. The real
#   python:3.11-slim has a python of its own in /usr/local that pip installs into, and the Dockerfile relies on
#   that; the stand-in deletes the marker so the Dockerfile's `pip install` works unchanged. Packages then
#   go to /usr/local/lib/python3.11/dist-packages and scripts to /usr/local/bin, as in the real image.
set -euo pipefail

IMAGE=${SIFT_BASE_IMAGE:-localhost/python:3.11-slim}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
SUITE=bookworm

force=0
for arg in "$@"; do
  case $arg in
    --force) force=1 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument: $arg (use --force to rebuild)" >&2; exit 2 ;;
  esac
done

if [ "$force" = 0 ] && buildah inspect --type image "$IMAGE" >/dev/null 2>&1; then
  echo "$IMAGE exists (use --force to rebuild)"
  exit 0
fi
for tool in buildah debootstrap; do
  command -v "$tool" >/dev/null || { echo "$tool is missing (apt-get install $tool)" >&2; exit 1; }
done
[ "$(id -u)" = 0 ] || { echo "debootstrap needs root" >&2; exit 1; }

work=$(mktemp -d /var/tmp/sift-base.XXXXXX)
rootfs=$work/rootfs
ctr=""
cleanup() {
  # debootstrap mounts proc and sys in the target; a failed run may leave them mounted.
  for m in proc sys dev/pts dev; do umount -l "$rootfs/$m" 2>/dev/null || true; done
  [ -n "$ctr" ] && buildah rm "$ctr" >/dev/null 2>&1 || true
  rm -rf --one-file-system "$work"
}
trap cleanup EXIT

echo "debootstrap $SUITE (minbase) from $MIRROR ..."
debootstrap --variant=minbase --include=python3,python3-pip,python3-venv,ca-certificates \
  "$SUITE" "$rootfs" "$MIRROR" >"$work/debootstrap.log" 2>&1 \
  || { tail -n 30 "$work/debootstrap.log" >&2; exit 1; }

# Make it python:3.11-slim-like, and small.
ln -sf python3 "$rootfs/usr/bin/python"
rm -f "$rootfs"/usr/lib/python3.*/EXTERNALLY-MANAGED
chroot "$rootfs" apt-get clean
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/debconf/*-old \
  "$rootfs"/var/log/* "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* \
  "$rootfs"/tmp/* "$rootfs"/root/.cache
find "$rootfs/usr/lib/python3" "$rootfs"/usr/lib/python3.* -name __pycache__ -prune -exec rm -rf {} + \
  2>/dev/null || true
# Per-host files: the runtime bind-mounts its own over them, so they stay as empty files (a runtime cannot
# create a missing mount target in a read-only root filesystem).
rm -rf "$rootfs"/dev/* "$rootfs"/proc/* "$rootfs"/sys/* "$rootfs/etc/machine-id"
for f in resolv.conf hosts hostname; do : >"$rootfs/etc/$f"; done

echo "committing $IMAGE ..."
ctr=$(buildah from scratch)
mnt=$(buildah mount "$ctr")
tar -C "$rootfs" --numeric-owner -cf - . | tar -C "$mnt" --numeric-owner -xpf -
buildah umount "$ctr" >/dev/null
buildah config --os linux --arch amd64 \
  --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin --env LANG=C.UTF-8 \
  --cmd python3 --label org.opencontainers.image.description="local stand-in for python:3.11-slim (Debian $SUITE)" \
  "$ctr"
buildah commit --quiet --rm "$ctr" "$IMAGE" >/dev/null
ctr=""
buildah images "$IMAGE"
