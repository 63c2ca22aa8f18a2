#!/usr/bin/env bash
# Nightly conformance on a self-hosted TDX or SNP runner: capability probe, the corpus on the
# real hardware, a time-boxed fuzz campaign; JUnit and findings land in $ARTIFACTS.
#
#   ci/nightly/run.sh [--dry-run] [--time SECONDS]
#
# --dry-run does everything that does not need the hardware (build, probe, the corpus on the
# model, a short model campaign) and says so; CI runs it that way on machines without TDX/SNP.
set -euo pipefail
cd "$(dirname "$0")/../.."
dry=0
time=${PRIVMEM_NIGHTLY_TIME:-1800}
while [ $# -gt 0 ]; do
    case "$1" in
        --dry-run) dry=1 ;;
        --time) time=$2; shift ;;
        *) echo "nightly: unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done
artifacts=${ARTIFACTS:-target/nightly}
mkdir -p "$artifacts/findings"
cargo build --release -p privmem
pm=./target/release/privmem
$pm caps --json > "$artifacts/caps.json"
$pm caps
vm=""
if grep -q '"tdx":true' "$artifacts/caps.json"; then vm=tdx; fi
if grep -q '"snp":true' "$artifacts/caps.json"; then vm=${vm:-snp}; fi
if [ "$dry" = 1 ] || [ -z "$vm" ]; then
    echo "nightly: dry run (no TDX/SNP on this machine, or --dry-run): the corpus runs on the model and on whatever KVM offers; the hardware steps are skipped"
    echo "nightly: the set-up a TDX and an SNP host would be given (docs/cvm-setup.md):"
    $pm plan corpus/tdx/shared-alias.seq corpus/snp/validate-then-access.seq
    $pm replay --junit "$artifacts/corpus-model.xml" corpus/*/*.seq
    $pm replay --backend kvm --junit "$artifacts/corpus-kvm.xml" corpus/*/*.seq || true
    $pm fuzz --runs 2000 --seed 1 --out "$artifacts/findings" --junit "$artifacts/fuzz-model.xml" --json > "$artifacts/fuzz-model.jsonl" || true
    echo "nightly: dry run done; artifacts in $artifacts"
    exit 0
fi
echo "nightly: $vm hardware present"
$pm replay --backend kvm --junit "$artifacts/corpus-$vm.xml" corpus/*/*.seq
$pm fuzz --backend kvm --vm "$vm" --time "$time" --out "$artifacts/findings" --junit "$artifacts/fuzz-$vm.xml" --json > "$artifacts/fuzz-$vm.jsonl"
