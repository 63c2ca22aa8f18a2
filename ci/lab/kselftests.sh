#!/usr/bin/env bash
# Export every default and SW_PROTECTED scenario of corpus/ as an upstream-style KVM selftest,
# build them inside the lab kernel's own tools/testing/selftests/kvm (against that tree's
# kvm_util library, statically, warnings as errors), and run them in the lab on that kernel.
#
#   ci/lab/kselftests.sh [NAME]     (a lab kernel of ci/lab/kernels; default: its first)
#
# Prints what exported, what built and what passed; exits 1 if a built test failed. Known
# divergences (corpus/known/) are expected to fail on the kernels they name and are counted.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
version=${1:-$(awk '!/^#/ && NF == 3 {print $1; exit}' "$here/kernels")}
pm=$repo/target/release/privmem
kernel=$(bash "$here/build-kernel.sh" --version "$version")
cache=$(dirname "$kernel")
tree=$(cat "$cache/tree-${kernel##*bzImage-}")
kst=$tree/tools/testing/selftests/kvm
arch=x86
[ -d "$kst/x86_64" ] && arch=x86_64
out=$repo/target/kselftests-$version
rm -rf "$out" && mkdir -p "$out"
(cd "$tree" && make -s headers >/dev/null)
# The exact release the tree builds (Debian's 6.12 line takes stable backports): the model, the
# export and the known divergences go by it, not by the line.
release=$(make -s -C "$tree" kernelversion)
rm -f "$kst/$arch"/privmem_*
exported=() refused=0
for f in $(cd "$repo" && find corpus -name '*.seq' | sort); do
    name=privmem_$(echo "${f#corpus/}" | sed 's/\.seq$//; s/[^A-Za-z0-9]/_/g')
    if "$pm" export --kselftest=upstream --kernel "$release" "$repo/$f" -o "$kst/$arch/$name.c" >/dev/null 2>"$out/$name.refused"; then
        exported+=("$arch/$name")
        rm -f "$out/$name.refused"
    else
        refused=$((refused + 1))
    fi
done
# The standalone flavour of every default and SW_PROTECTED scenario too: self-contained C,
# built here with gcc (static, warnings as errors) and run in the same lab boot.
standalone=() sa_refused=0
mkdir -p "$out/standalone"
for f in $(cd "$repo" && find corpus -name '*.seq' | sort); do
    name=pmsa_$(echo "${f#corpus/}" | sed 's/\.seq$//; s/[^A-Za-z0-9]/_/g')
    if "$pm" export --kselftest=standalone "$repo/$f" -o "$out/standalone/$name.c" >/dev/null 2>"$out/standalone/$name.refused"; then
        rm -f "$out/standalone/$name.refused"
        if gcc -O2 -Wall -Werror -static -o "$out/standalone/$name" "$out/standalone/$name.c" 2>"$out/standalone/$name.build"; then
            standalone+=("$out/standalone/$name")
        else
            echo "kselftests: standalone $name does not build:"; tail -5 "$out/standalone/$name.build"
        fi
    else
        sa_refused=$((sa_refused + 1))
    fi
done
progs="${exported[*]}"
built=()
for p in "${exported[@]}"; do
    if make -s -C "$kst" "TEST_GEN_PROGS_${arch}=$progs" EXTRA_CFLAGS=-Werror LDFLAGS=-static "$kst/$p" \
        >"$out/$(basename "$p").build" 2>&1; then
        built+=("$kst/$p")
    else
        echo "kselftests: $p does not build:"; tail -5 "$out/$(basename "$p").build"
    fi
done
# The upstream flavour is meant to be pasted into a patch: checkpatch (that tree's own) must
# have nothing to say about it.
style=0
for p in "${exported[@]}"; do
    if ! perl "$tree/scripts/checkpatch.pl" --no-tree --terse --show-types -f "$kst/$p.c" >"$out/$(basename "$p").checkpatch" 2>&1; then
        style=$((style + 1))
        echo "kselftests: checkpatch on $p.c:"; grep -E "ERROR|WARNING" "$out/$(basename "$p").checkpatch" | head -5
    elif grep -qE "WARNING|CHECK" "$out/$(basename "$p").checkpatch"; then
        style=$((style + 1))
        echo "kselftests: checkpatch on $p.c:"; grep -E "WARNING|CHECK" "$out/$(basename "$p").checkpatch" | head -5
    fi
done
echo "kselftests on $version: ${#exported[@]} exported, $refused refused (see $out/*.refused), ${#built[@]} built, $style with checkpatch findings"
echo "standalone on $version: ${#standalone[@]} exported and built, $sa_refused refused (see $out/standalone/*.refused)"
rc=0
all=("${built[@]}" "${standalone[@]}")
"$pm" lab --kernel "$kernel" --exec --json --timeout $((120 + 35 * ${#all[@]})) "${all[@]}" > "$out/lab.json" || rc=$?
python3 - "$out/lab.json" "$repo" "$release" <<'PY'
import json, sys, os, glob, re
v = json.loads(open(sys.argv[1]).read().splitlines()[-1])
repo, version = sys.argv[2], sys.argv[3]
def rel(s):
    # The leading major.minor[.patch] of a release (a kernelversion may end in -rc1).
    return tuple(int(x) for x in (re.match(r"\d+(?:\.\d+){1,2}", s).group(0).split(".") + ["0"])[:3])
def names(word, r):
    # A marker's kernel word as privmem reads it (KernelRange::parse): a line (6.12), a release
    # (6.12.118) or a range inside a line (6.12.118.., ..=6.12.117, 6.12.0..=6.12.117), both
    # ends included. The tests corpus.rs check that every marker's words parse there.
    if word == "next":
        return False
    lo, sep, hi = word.partition("..")
    if not sep:
        return r[:2] == rel(word)[:2] if word.count(".") == 1 else r == rel(word)
    hi = hi[1:] if hi.startswith("=") else hi
    line = rel(lo or hi)[:2]
    return r[:2] == line and (not lo or r >= rel(lo)) and (not hi or r <= rel(hi))
# Which kernels each known divergence shows on (`# known-divergence: kvm SIG on K...`).
shows = {}
for f in glob.glob(f"{repo}/corpus/known/*.seq"):
    stem = re.sub(r"[^A-Za-z0-9]", "_", os.path.basename(f)[:-4])
    m = re.search(r"^# known-divergence: kvm \S+(?: on (.*))?$", open(f).read(), re.M)
    for name in ("privmem_known_" + stem, "pmsa_known_" + stem):
        shows[name] = (m.group(1) or "").split() if m else []
bad = 0
for r in v["results"]:
    name = os.path.basename(r["file"])
    ok = r.get("ok") is True or "skipped" in r
    if name in shows and (not shows[name] or any(names(w, rel(version)) for w in shows[name])):
        if ok:
            bad += 1
            print(f"  known divergence no longer fails here: {name}")
        else:
            print(f"  known divergence fails, as recorded for {version}: {name}")
    elif not ok:
        bad += 1
        print(f"  FAIL {name}")
        # A failed program's output is its `error`; a replayed scenario's, its findings.
        for d in [f.get("detail", "") for f in r.get("findings", [])] + [r.get("error", "")]:
            print("    " + "\n    ".join(str(d).splitlines()[-8:]))
print(f"kselftests on {version}: {v['passed']} passed, {v['failed']} failed, {v['skipped']} skipped in the lab; {bad} unexpected")
sys.exit(1 if bad else 0)
PY
[ "$style" = 0 ] || { echo "kselftests: $style exported tests are not checkpatch-clean"; exit 1; }
