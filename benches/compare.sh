#!/usr/bin/env bash
# Nightly comparison (issue 3): gen_site nights 0..N generated into one
# root; each night kura, restic and borg back it up into their own
# repositories, one after the other; then each restores the last night and
# the result is compared with the source; last, both check --read-data.
# Prints wall time, CPU time, peak
# RSS and repository growth per night, and the restore times.
#
# Usage: benches/compare.sh [SCALE] [LAST_NIGHT]   (defaults 0.25, 3)
# With KURA_BASE=/path/to/another/kura, that binary (e.g. a build of the
# commit before a refactor) is measured too, as tool "base", in the same
# run: backups, restore and check (not prune).
set -euo pipefail
cd "$(dirname "$0")/.."
scale=${1:-0.25}
nights=${2:-3}
gen=../shared/bench/gen_site.py
command -v restic >/dev/null || { echo "apt-get install restic borgbackup" >&2; exit 1; }
cargo build --release --quiet --bin kura
kura=${CARGO_TARGET_DIR:-$PWD/target}/release/kura
work=$(mktemp -d "${TMPDIR:-/tmp}/kura-compare.XXXXXX")
trap 'rm -rf "$work"' EXIT
root=$work/site
export KURA_PASSWORD=bench RESTIC_PASSWORD=bench BORG_PASSPHRASE=bench KURA_CACHE_DIR=$work/kura-cache
export RESTIC_CACHE_DIR=$work/restic-cache BORG_BASE_DIR=$work/borg-base
"$kura" -r "$work/kura" init --kdf-memory 19456 --kdf-passes 2 >/dev/null
base=${KURA_BASE:-}
if [ -n "$base" ]; then
    "$base" -r "$work/base" init --kdf-memory 19456 --kdf-passes 2 >/dev/null
fi
restic -r "$work/restic" init -q >/dev/null
have_borg=0
if command -v borg >/dev/null; then
    borg init -e repokey "$work/borg" 2>/dev/null && have_borg=1
fi
measure() { # label night command...
    local label=$1 night=$2; shift 2
    sync
    /usr/bin/time -f '%e %U %S %M' -o "$work/time" "$@" >/dev/null 2>"$work/err" || { cat "$work/err" >&2; exit 1; }
    read -r wall user sys rss <"$work/time"
    printf '%s\t%s\t%s\t%.2f\t%s\n' "$label" "$night" "$wall" "$(echo "$user + $sys" | bc)" "$((rss / 1024))" >>"$work/results"
}
size() { du -sb "$1" | cut -f1; }
printf 'tool\tnight\twall_s\tcpu_s\trss_MB\trepo_MB\tadded_MB\n'
declare -A last=([kura]=0 [base]=0 [restic]=0 [borg]=0)
for night in $(seq 0 "$nights"); do
    python3 "$gen" "$root" --night "$night" --scale "$scale" >/dev/null
    sync
    measure kura "$night" "$kura" -r "$work/kura" backup --host bench --quiet "$root"
    if [ -n "$base" ]; then
        KURA_CACHE_DIR=$work/base-cache measure base "$night" "$base" -r "$work/base" backup --host bench --quiet "$root"
    fi
    measure restic "$night" restic -r "$work/restic" backup -q --host bench "$root"
    if [ $have_borg = 1 ]; then
        measure borg "$night" borg create --compression zstd,3 "$work/borg::n$night" "$root"
    fi
    for tool in kura base restic borg; do
        [ -d "$work/$tool" ] || continue
        s=$(size "$work/$tool")
        line=$(grep -P "^$tool\t$night\t" "$work/results")
        printf '%s\t%.1f\t%.1f\n' "$line" "$(echo "$s / 1000000" | bc -l)" "$(echo "($s - ${last[$tool]}) / 1000000" | bc -l)"
        last[$tool]=$s
    done
done
echo
printf 'restore of night %s\twall_s\tcpu_s\trss_MB\tidentical\n' "$nights"
(cd "$root" && find . -type f -print0 | sort -z | xargs -0 sha256sum) >"$work/want"
check() { (cd "$1" && find . -type f -print0 | sort -z | xargs -0 sha256sum) | cmp -s - "$work/want" && echo yes || echo NO; }
measure kura-restore r "$kura" -r "$work/kura" restore latest --target "$work/r-kura"
printf '%s\t%s\n' "$(grep -P '^kura-restore\t' "$work/results" | cut -f3-)" "$(check "$work/r-kura$root")" | sed 's/^/kura\t/'
if [ -n "$base" ]; then
    KURA_CACHE_DIR=$work/base-cache measure base-restore r "$base" -r "$work/base" restore latest --target "$work/r-base"
    printf '%s\t%s\n' "$(grep -P '^base-restore\t' "$work/results" | cut -f3-)" "$(check "$work/r-base$root")" | sed 's/^/base\t/'
fi
measure restic-restore r restic -r "$work/restic" restore latest --target "$work/r-restic"
printf '%s\t%s\n' "$(grep -P '^restic-restore\t' "$work/results" | cut -f3-)" "$(check "$work/r-restic$root")" | sed 's/^/restic\t/'
echo
printf 'check --read-data\twall_s\tcpu_s\trss_MB\n'
measure kura-check c "$kura" -r "$work/kura" check --read-data
printf 'kura\t%s\n' "$(grep -P '^kura-check\t' "$work/results" | cut -f3-)"
if [ -n "$base" ]; then
    KURA_CACHE_DIR=$work/base-cache measure base-check c "$base" -r "$work/base" check --read-data
    printf 'base\t%s\n' "$(grep -P '^base-check\t' "$work/results" | cut -f3-)"
fi
measure restic-check c restic -r "$work/restic" check --read-data
printf 'restic\t%s\n' "$(grep -P '^restic-check\t' "$work/results" | cut -f3-)"
echo
# Prune (issue 4): forget all but the last two nights, then prune. kura
# --now does both phases in one run (what restic does under its exclusive
# lock); kura's graced mode is timed too, on a copy: a first run that only
# records, then the condemning run with the reference ripe (--grace 1s).
printf 'forget+prune\twall_s\tcpu_s\trss_MB\trepo_MB_after\n'
cp -a "$work/kura" "$work/kura-graced"
cp -a "$work/kura-cache" "$work/kura-graced-cache"
measure kura-prune p "$kura" -r "$work/kura" forget --keep-last 2 --prune --now
printf 'kura --now\t%s\t%.1f\n' "$(grep -P '^kura-prune\t' "$work/results" | cut -f3-)" "$(echo "$(size "$work/kura") / 1000000" | bc -l)"
measure restic-prune p restic -r "$work/restic" forget --keep-last 2 --prune
printf 'restic\t%s\t%.1f\n' "$(grep -P '^restic-prune\t' "$work/results" | cut -f3-)" "$(echo "$(size "$work/restic") / 1000000" | bc -l)"
if [ $have_borg = 1 ]; then
    measure borg-prune p sh -c "borg prune --keep-last 2 '$work/borg' && borg compact '$work/borg'"
    printf 'borg\t%s\t%.1f\n' "$(grep -P '^borg-prune\t' "$work/results" | cut -f3-)" "$(echo "$(size "$work/borg") / 1000000" | bc -l)"
fi
KURA_CACHE_DIR=$work/kura-graced-cache "$kura" -r "$work/kura-graced" forget --keep-last 2 --prune --grace 1s >/dev/null
sleep 2
KURA_CACHE_DIR=$work/kura-graced-cache measure kura-graced p "$kura" -r "$work/kura-graced" prune --grace 1s
printf 'kura graced (condemning run)\t%s\t%.1f\n' "$(grep -P '^kura-graced\t' "$work/results" | cut -f3-)" "$(echo "$(size "$work/kura-graced") / 1000000" | bc -l)"
"$kura" -r "$work/kura" check --read-data >/dev/null && echo "kura check --read-data after prune: clean"
