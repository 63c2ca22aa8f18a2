#!/usr/bin/env bash
# Build (or reuse) a lab kernel from a Debian source package named in ci/lab/kernels (the lab's
# table of kernels: 6.12 from the release's own suite, 7.3 from trixie-backports; the first line
# is the default): tinyconfig plus kernel.config,
# plus debug.config with --debug (the options KVM developers run: KVM_PROVE_MMU, DEBUG_VM,
# PROVE_LOCKING, DEBUG_LIST, KASAN, KCOV for kernel coverage, the lockup, stall and leak
# detectors and fault injection), or tdx.config with --tdx (kvm_intel and KVM's TDX code on the
# software TDX module: tdx/glue.patch plus the module's sources from tdx/module/, 7.3 only;
# boot it with `tdx_soft`), plus one patch from
# planted/ with --planted NAME (a bug planted on purpose: the harness's own test).
#
# Prints the bzImage path; its vmlinux (for addr2line) sits beside it as vmlinux-KEY. The cache
# key is the source package version, the fragments' and the patch's hashes, so a second run
# does not rebuild. A planted kernel is built from a copy of its flavour's built tree, so only
# the patched files and the link are redone.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cache=${PRIVMEM_LAB_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/privmem-lab}
flavour=stock
patch=
# The table: NAME SUITE PACKAGE per line (comments start with #).
kernels() { awk '!/^#/ && NF == 3' "$here/kernels"; }
version=$(kernels | awk 'NR == 1 {print $1}')
while [ $# -gt 0 ]; do
    case "$1" in
        --debug) flavour=debug ;;
        --tdx) flavour=tdx ;;
        --version)
            shift
            version=${1:-}
            ;;
        --planted)
            shift
            patch="$here/planted/${1%.patch}.patch"
            [ -f "$patch" ] || { echo "lab: no planted bug $1 (see $here/planted/)" >&2; exit 2; }
            ;;
        *) echo "usage: build-kernel.sh [--version $(kernels | awk '{print $1}' | paste -sd'|')] [--debug | --tdx] [--planted NAME]" >&2; exit 2 ;;
    esac
    shift
done
row=$(kernels | awk -v v="$version" '$1 == v')
[ -n "$row" ] || { echo "lab: --version takes one of $(kernels | awk '{print $1}' | paste -sd' ') (ci/lab/kernels), not \"$version\"" >&2; exit 2; }
read -r _ suite package <<<"$row"
# The glue patch is written against 7.3's TDX code (virt/hw.c, the SEAMCALL path, KVM's TDX
# support); 6.12 has none of it.
[ "$flavour" != tdx ] || [ "$version" = 7.3 ] || { echo "lab: --tdx needs --version 7.3 (the glue patch is for 7.3's TDX code), not \"$version\"" >&2; exit 2; }
mkdir -p "$cache"
need=()
for p in qemu-system-x86 build-essential flex bison bc libelf-dev libssl-dev cpio xz-utils rsync; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
[ "$suite" = own ] && ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" && need+=("$package")
if [ ${#need[@]} -gt 0 ]; then
    echo "lab: installing ${need[*]}" >&2
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >&2
fi
if [ "$suite" = own ]; then
    ver=$(dpkg-query -W -f='${Version}' "$package")
    tarball=/usr/src/$package.tar.xz
else
    # Another suite (7.3 comes from trixie-backports), which this machine's apt does not list. A private
    # apt state (its own source list, lists and cache under the lab cache) downloads the package
    # without touching the machine's apt configuration or dpkg database; the mirror is the one
    # the machine's own sources already use for Debian.
    aptdir="$cache/apt-$suite"
    mirror=$(grep -rhoE '^(URIs:|deb)[[:space:]]+[^[:space:]]+/debian/?([[:space:]]|$)' /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null \
        | grep -v -- '-security' | awk '{print $2}' | head -1 || true)
    [ -n "$mirror" ] || { echo "lab: no Debian mirror in /etc/apt/sources.list{,.d} to fetch $suite from" >&2; exit 1; }
    mkdir -p "$aptdir/lists/partial" "$aptdir/archives/partial"
    echo "deb ${mirror%/} $suite main" > "$aptdir/sources.list"
    apt_private=(-o Dir::Etc::SourceList="$aptdir/sources.list" -o Dir::Etc::SourceParts=/dev/null
        -o Dir::State="$aptdir" -o Dir::State::Status=/dev/null -o Dir::Cache="$aptdir" -o Debug::NoLocking=1
        -o APT::Sandbox::User=root)
    # The suite's lists are fetched again once a day (its version rotates); a warm run within
    # the day needs no network.
    if [ -z "$(find "$aptdir/lists" -maxdepth 1 -name '*Packages*' -mmin -1440 2>/dev/null | head -1)" ]; then
        apt-get "${apt_private[@]}" update -qq >&2
    fi
    ver=$(apt-cache "${apt_private[@]}" show "$package" | sed -n 's/^Version: //p' | sort -V | tail -1)
    [ -n "$ver" ] || { echo "lab: $suite has no $package" >&2; exit 1; }
    tarball="$aptdir/$package-$ver.tar.xz"
    if [ ! -f "$tarball" ]; then
        echo "lab: downloading $package $ver from $suite" >&2
        (cd "$aptdir/archives" && apt-get "${apt_private[@]}" download -qq "$package=$ver" >&2)
        deb=$(ls "$aptdir"/archives/"${package}"_*.deb | head -1)
        dpkg-deb --fsys-tarfile "$deb" | tar -xO "./usr/src/$package.tar.xz" > "$tarball.tmp"
        mv "$tarball.tmp" "$tarball" && rm -f "$deb"
    fi
fi
fragments=("$here/kernel.config")
[ "$flavour" = debug ] && fragments+=("$here/debug.config")
[ "$flavour" = tdx ] && fragments+=("$here/tdx.config")
# The tdx flavour's sources beyond the package: the glue patch and the software module.
tdx_sources=()
[ "$flavour" = tdx ] && tdx_sources=("$here/tdx/glue.patch" "$here"/tdx/module/*.[ch])
base_key=$( (echo "$ver"; cat "${fragments[@]}" ${tdx_sources[@]+"${tdx_sources[@]}"}) | sha256sum | cut -c1-16)
key=$base_key
[ -n "$patch" ] && key=$( (echo "$base_key"; cat "$patch") | sha256sum | cut -c1-16)
out="$cache/bzImage-$key"
if [ -f "$out" ] && [ -f "$cache/headers-$ver/include/linux/kvm.h" ]; then
    echo "$out"
    exit 0
fi

# The flavour's tree: extracted once per source version, configured and built once per key.
src="$cache/linux-$ver-$flavour"
# The tdx tree carries the glue patch, applied to the pristine sources; the tree remembers the
# patch's hash, and a changed patch means a fresh extraction (patches do not undo cleanly).
glue=
[ "$flavour" = tdx ] && glue=$(sha256sum < "$here/tdx/glue.patch" | cut -c1-16)
if [ ! -f "$src/Makefile" ] || [ "$(cat "$src/.privmem-glue" 2>/dev/null || true)" != "$glue" ]; then
    rm -rf "$src" "$src.tmp" && mkdir -p "$src.tmp"
    tar -xf "$tarball" -C "$src.tmp" --strip-components=1
    if [ -n "$glue" ]; then
        patch -s -p1 -d "$src.tmp" < "$here/tdx/glue.patch"
        echo "$glue" > "$src.tmp/.privmem-glue"
    fi
    mv "$src.tmp" "$src"
fi
build() { # DIR: configure from the fragments and build bzImage there
    (
        cd "$1"
        # The software TDX module (seam.c, seam.h, soft.c) builds as arch/x86/virt/vmx/tdx/soft.o.
        # cp -p keeps the files' times, so an unchanged module is not recompiled.
        [ "$flavour" = tdx ] && cp -p "$here"/tdx/module/*.[ch] arch/x86/virt/vmx/tdx/
        if [ ! -f .privmem-key ] || [ "$(cat .privmem-key)" != "$base_key" ]; then
            make -s tinyconfig >&2
            for f in "${fragments[@]}"; do
                scripts/kconfig/merge_config.sh -m .config "$f" >&2
            done
            make -s olddefconfig >&2
            opts="KVM KVM_AMD KVM_SW_PROTECTED_VM TRANSPARENT_HUGEPAGE BLK_DEV_INITRD SERIAL_8250_CONSOLE TRACING"
            # kvm_intel replaces kvm_amd (both built in cannot be).
            [ "$flavour" = tdx ] && opts="${opts/KVM_AMD/KVM_INTEL} INTEL_TDX_HOST KVM_INTEL_TDX INTEL_TDX_SOFT ACPI DEBUG_FS KCOV"
            [ "$flavour" = debug ] && opts="$opts KVM_PROVE_MMU DEBUG_VM PROVE_LOCKING DEBUG_LIST KASAN KCOV KASAN_VMALLOC SOFTLOCKUP_DETECTOR DETECT_HUNG_TASK FAULT_INJECTION FAILSLAB FAIL_PAGE_ALLOC FAULT_INJECTION_DEBUG_FS DEBUG_KMEMLEAK"
            for opt in $opts; do
                grep -q "^CONFIG_$opt=y" .config || { echo "lab: CONFIG_$opt did not stick" >&2; exit 1; }
            done
            echo "$base_key" > .privmem-key
        fi
        make -s -j"$(nproc)" bzImage >&2
    )
}
if [ -z "$patch" ]; then
    build "$src"
    tree=$src
else
    # Build the flavour first, then a copy of its tree with the patch: an incremental build.
    [ -f "$cache/bzImage-$base_key" ] || bash "$0" --version "$version" $([ "$flavour" != stock ] && echo "--$flavour") >/dev/null
    tree="$cache/planted-$key"
    rm -rf "$tree"
    cp -a "$src" "$tree"
    patch -s -p1 -d "$tree" < "$patch"
    build "$tree"
fi
cp "$tree/vmlinux" "$cache/vmlinux-$key.tmp" && mv "$cache/vmlinux-$key.tmp" "$cache/vmlinux-$key"
# The tree's uAPI headers, sanitized for userspace (what tests/uapi_layout.rs compiles against).
if [ ! -f "$cache/headers-$ver/include/linux/kvm.h" ]; then
    rm -rf "$cache/headers-$ver.tmp"
    make -s -C "$src" headers_install INSTALL_HDR_PATH="$cache/headers-$ver.tmp" >&2
    rm -rf "$cache/headers-$ver" && mv "$cache/headers-$ver.tmp" "$cache/headers-$ver"
fi
echo "$src" > "$cache/tree-$key"   # the source the vmlinux's lines refer to
cp "$tree/arch/x86/boot/bzImage" "$out.tmp" && mv "$out.tmp" "$out"
[ -n "$patch" ] && rm -rf "$tree"
echo "$out"
