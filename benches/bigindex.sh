#!/usr/bin/env bash
# Memory at any repository size (issue 14, item 5): for each N, a fresh
# repository is given an index of N entries directly through the index
# writer (benches/tools/big_index.rs: real sealed 16-byte chunks in packs
# of 256, index files of 32 packs, as a backup writes them), then a small
# tree (about 40 MB) is backed up, restored and checked against it. Prints
# peak RSS, wall and CPU (user+sys) seconds of every step, so that growth
# from one N to the next shows (the targets: at most 256 MB for backup and
# restore at 10M entries, and at most 2x the peak at 1M).
#
# Steps, per N:
#   build               big_index writes the N entries (not kura)
#   sync-cold           big_index sync: opening and syncing an empty index
#                       cache from the N entries (its open/sync seconds are
#                       printed after the table)
#   sync-warm           the same with the cache just filled
#   backup-cold         the small tree, empty cache (syncs from N entries)
#   backup-warm         the small tree again after a small change
#   restore             the last snapshot, warm cache
#   restore-cold        the same with an empty cache
#   check               structure: every index file, every pack's header
#   check-read-data     every pack read whole: the N synthetic chunks too
#   prune-dry-run       the plan against N unreferenced entries
#   prune-now           which deletes the N synthetic chunks' packs
#
# Usage: benches/bigindex.sh [N ...]      (default: 1000000 10000000)
#   KURA_BIN=path     the kura to measure (default: a release build here)
#   BIG_INDEX=path    the helper (default: a release build here)
#   KURA_ARGS="..."   extra global options (e.g. --memory small)
#   SCRATCH=dir       where repositories and caches go (default: $TMPDIR);
#                     needs about 2.5 GB per 10M entries (packs 1.1 GB,
#                     index files 0.45 GB, the cache about 1 GB).
set -euo pipefail
cd "$(dirname "$0")/.."
sizes=("$@")
[ ${#sizes[@]} -gt 0 ] || sizes=(1000000 10000000)
target=${CARGO_TARGET_DIR:-$PWD/target}
if [ -z "${KURA_BIN:-}" ]; then
    cargo build --release --quiet --bin kura
    KURA_BIN=$target/release/kura
fi
if [ -z "${BIG_INDEX:-}" ]; then
    cargo build --release --quiet --example big_index
    BIG_INDEX=$target/release/examples/big_index
fi
work=$(mktemp -d "${SCRATCH:-${TMPDIR:-/tmp}}/kura-bigindex.XXXXXX")
trap 'rm -rf "$work"' EXIT
export KURA_PASSWORD=bench
# shellcheck disable=SC2206
extra=(${KURA_ARGS:-})
kura=("$KURA_BIN" "${extra[@]}")

# measure N STEP command...: one line of results; the command's standard
# output is kept in $work/out.
measure() {
    local n=$1 step=$2; shift 2
    sync
    /usr/bin/time -f '%e %U %S %M' -o "$work/time" "$@" >"$work/out" 2>"$work/err" ||
        { echo "$n $step failed:" >&2; cat "$work/err" >&2; exit 1; }
    read -r wall user sys rss <"$work/time"
    printf '%s\t%s\t%s\t%s\t%s\n' "$n" "$step" "$wall" \
        "$(echo "$user + $sys" | bc -l)" "$((rss / 1024))"
}

# The small tree: kura's own sources and 32 MB of random bytes.
src=$work/src
mkdir -p "$src"
cp -r src format-spec "$src/"
head -c $((32 << 20)) /dev/urandom >"$src/random.bin"

notes=()
printf 'N\tstep\twall_s\tcpu_s\trss_MB\n'
for n in "${sizes[@]}"; do
    repo=$work/repo cache=$work/cache
    rm -rf "$repo" "$cache" "$work/restore"
    export KURA_CACHE_DIR=$cache
    measure "$n" build "$BIG_INDEX" "$repo" "$n"
    notes+=("$n build: $(cat "$work/out")")
    measure "$n" sync-cold "$BIG_INDEX" sync "$repo" "$cache"
    notes+=("$n sync-cold: $(cat "$work/out")")
    measure "$n" sync-warm "$BIG_INDEX" sync "$repo" "$cache"
    notes+=("$n sync-warm: $(cat "$work/out")")
    notes+=("$n cache file: $(du -m "$cache"/*/index.redb | cut -f1) MB")
    rm -rf "$cache"
    measure "$n" backup-cold "${kura[@]}" -r "$repo" backup -q "$src"
    echo "changed" >"$src/small-change"
    measure "$n" backup-warm "${kura[@]}" -r "$repo" backup -q "$src"
    measure "$n" restore "${kura[@]}" -r "$repo" restore latest --target "$work/restore"
    diff -r "$src" "$work/restore/${src#/}" >/dev/null ||
        { echo "$n: the restored tree differs" >&2; exit 1; }
    rm -rf "$work/restore" "$cache"
    measure "$n" restore-cold "${kura[@]}" -r "$repo" restore latest --target "$work/restore"
    rm -rf "$work/restore" "$src/small-change"
    measure "$n" check "${kura[@]}" -r "$repo" check
    measure "$n" check-read-data "${kura[@]}" -r "$repo" check --read-data
    measure "$n" prune-dry-run "${kura[@]}" -r "$repo" prune --dry-run
    measure "$n" prune-now "${kura[@]}" -r "$repo" prune --now
    notes+=("$n prune: $(tr '\n' ' ' <"$work/out")")
done
printf '%s\n' "${notes[@]}"
