#!/bin/bash -eu
# Build the model fuzz targets (hosted fuzzers have no /dev/kvm, so not `kvm`). In the
# OSS-Fuzz/ClusterFuzzLite builder $SRC and $OUT are set and `cargo` is nightly; run here it
# builds into target/fuzzers with the nightly toolchain.
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
src=${SRC:+$SRC/privmem}
src=${src:-$here}
out=${OUT:-$here/target/fuzzers}
mkdir -p "$out"
cargo_cmd=(cargo)
if [ -z "${SRC:-}" ]; then
    cargo_cmd=(rustup run nightly cargo)
fi
cd "$src/fuzz"
"${cargo_cmd[@]}" fuzz build -O
for t in model variants text codec seam_diff; do
    cp "target/x86_64-unknown-linux-gnu/release/$t" "$out/$t"
done
# Seeds: the corpus scenarios, encoded.
seeds=$(mktemp -d)
"$src/target/release/privmem" corpus export --libfuzzer "$seeds" "$src/corpus" 2>/dev/null || \
    (cd "$src" && "${cargo_cmd[@]}" run --release -q -p privmem -- corpus export --libfuzzer "$seeds" corpus)
for t in model variants codec; do
    (cd "$seeds" && zip -q -r "$out/${t}_seed_corpus.zip" . 2>/dev/null || tar -cf "$out/${t}_seed_corpus.tar" .)
done
echo "fuzzers in $out: $(ls "$out" | tr '\n' ' ')"
