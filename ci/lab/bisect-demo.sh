#!/usr/bin/env bash
# The README's `git bisect run` recipe, exercised end to end on two local lab kernels: a
# throwaway repository whose history goes from the stock 6.12 lab kernel to one with a planted
# bug (ci/lab/planted/gmem-punch-skips-invalidate.patch), with unrelated commits around it.
# Each bisect step builds (or reuses) the kernel its commit names and replays the reproducer
# in the lab; `git bisect` must name the commit that planted the bug.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
pm=$repo/target/release/privmem
case_file=$repo/corpus/lab/punch-private-reads-zero.seq
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
git init -q && git config user.email bisect@privmem && git config user.name bisect
commit() { echo "$1" > KERNEL; git add KERNEL; git commit -q --allow-empty -m "$2"; }
commit stock "base: the stock lab kernel"
commit stock "an unrelated change"
commit stock "another unrelated change"
commit gmem-punch-skips-invalidate "kvm: guest_memfd: skip the invalidation on a punch (the bug)"
commit gmem-punch-skips-invalidate "a later change"
bad_commit=$(git rev-parse HEAD~1)
# The step script: build the commit's kernel (125: skip the commit if it does not build), then
# replay; privmem's exit status 0/1 is good/bad, anything else a skip.
cat > "$work/step.sh" <<STEP
#!/bin/sh
k=\$(cat KERNEL)
if [ "\$k" = stock ]; then img=\$(bash "$here/build-kernel.sh") || exit 125
else img=\$(bash "$here/build-kernel.sh" --planted "\$k") || exit 125; fi
"$pm" lab --kernel "\$img" "$case_file" > lab.log 2>&1
rc=\$?
[ \$rc -le 1 ] && exit \$rc || exit 125
STEP
git bisect start HEAD "$(git rev-list --max-parents=0 HEAD)" >/dev/null
git bisect run sh "$work/step.sh" > "$work/bisect.log" 2>&1 || true
found=$(grep -o '^[0-9a-f]\{40\} is the first bad commit' "$work/bisect.log" | cut -c1-40 || true)
if [ "$found" != "$bad_commit" ]; then
    echo "bisect demo: expected $bad_commit, git bisect said: ${found:-nothing}"; cat "$work/bisect.log"; exit 1
fi
cat "$work/bisect.log" | grep -E "^running|exited|is the first bad" || true
echo "bisect demo: git bisect run found the planted bug's commit ($(git log -1 --format=%s "$found"))"
