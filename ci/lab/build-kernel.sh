#!/usr/bin/env bash
# Build (or reuse) the lab kernel: tinyconfig plus kernel.config, from Debian's linux-source-6.12.
# Prints the bzImage path. The cache key is the source package version and the fragment's hash,
# so a second run does not rebuild.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cache=${PRIVMEM_LAB_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/privmem-lab}
mkdir -p "$cache"
need=()
for p in qemu-system-x86 linux-source-6.12 build-essential flex bison bc libelf-dev libssl-dev cpio xz-utils; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
    echo "lab: installing ${need[*]}" >&2
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >&2
fi
ver=$(dpkg-query -W -f='${Version}' linux-source-6.12)
key=$( (echo "$ver"; cat "$here/kernel.config") | sha256sum | cut -c1-16)
out="$cache/bzImage-$key"
if [ -f "$out" ]; then
    echo "$out"
    exit 0
fi
src="$cache/linux-source-6.12-$ver"
if [ ! -f "$src/Makefile" ]; then
    rm -rf "$src.tmp" && mkdir -p "$src.tmp"
    tar -xf /usr/src/linux-source-6.12.tar.xz -C "$src.tmp" --strip-components=1
    mv "$src.tmp" "$src"
fi
cd "$src"
make -s tinyconfig >&2
scripts/kconfig/merge_config.sh -m .config "$here/kernel.config" >&2
make -s olddefconfig >&2
for opt in KVM KVM_AMD KVM_SW_PROTECTED_VM TRANSPARENT_HUGEPAGE BLK_DEV_INITRD SERIAL_8250_CONSOLE TRACING; do
    grep -q "^CONFIG_$opt=y" .config || { echo "lab: CONFIG_$opt did not stick" >&2; exit 1; }
done
make -s -j"$(nproc)" bzImage >&2
cp arch/x86/boot/bzImage "$out.tmp" && mv "$out.tmp" "$out"
echo "$out"
