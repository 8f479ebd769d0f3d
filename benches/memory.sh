#!/usr/bin/env bash
# Memory against the size of one run (issue 17): for each N (GB), writes N
# GB of incompressible data, N GB of compressible text and a sparse disk
# image holding N GB, then backs each up into its own fresh repository,
# adds a small night, restores, checks with --read-data, forgets the first
# snapshot and prunes (--now), and copies the repository. Prints peak RSS
# and wall time of every step, and seconds per GB, so that growth with N
# shows (the target: peak at 16 GB within 20 % of the peak at 1 GB).
#
# Usage: benches/memory.sh [N ...]        (default: 1 4)
#   KURA_BIN=path     the kura to measure (default: a release build here)
#   KURA_ARGS="..."   extra global options (e.g. a small-machine setting)
#   SCRATCH=dir       where data and repositories go (default: $TMPDIR);
#                     needs about 3 x N GB free (data, repository,
#                     restore), one kind at a time.
#   KINDS="random text image"   the kinds to run (default: all three)
#   COLD=1            drop the page cache before every step (needs root), and
#                     time a restore until its data is on disk: every N then
#                     reads and writes the disk, so seconds per GB compare.
#   S3=1              the measured repository is on Garage (started here
#                     on loopback, data under SCRATCH) instead of a local
#                     directory; copy still goes to a local directory.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=benches/garage.sh
. benches/garage.sh
sizes=("$@")
[ ${#sizes[@]} -gt 0 ] || sizes=(1 4)
if [ -z "${KURA_BIN:-}" ]; then
    cargo build --release --quiet --bin kura
    KURA_BIN=${CARGO_TARGET_DIR:-$PWD/target}/release/kura
fi
work=$(mktemp -d "${SCRATCH:-${TMPDIR:-/tmp}}/kura-memory.XXXXXX")
pids=()
cleanup() { for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
if [ -n "${S3:-}" ]; then
    scripts/install-test-servers.sh >/dev/null
    start_garage kura
fi
# shellcheck disable=SC2206
kinds=(${KINDS:-random text image})
export KURA_PASSWORD=bench
# shellcheck disable=SC2206
extra=(${KURA_ARGS:-})

kura=("$KURA_BIN" "${extra[@]}")

# measure KIND N STEP command...: one line of results.
measure() {
    local kind=$1 n=$2 step=$3; shift 3
    sync
    if [ -n "${COLD:-}" ]; then echo 3 >/proc/sys/vm/drop_caches; fi
    /usr/bin/time -f '%e %M' -o "$work/time" "$@" >/dev/null 2>"$work/err" ||
        { echo "$kind $n $step failed:" >&2; cat "$work/err" >&2; exit 1; }
    read -r wall rss <"$work/time"
    printf '%s\t%s\t%s\t%s\t%s\t%.2f\n' "$kind" "$n" "$step" "$wall" \
        "$((rss / 1024))" "$(echo "$wall / $n" | bc -l)"
}

# A prefix running a command and then, with COLD, flushing its data to
# disk (both inside the time measured).
durably=(sh -c '"$@" && if [ -n "$0" ]; then sync; fi' "${COLD:-}")

# make KIND N DIR: the source of one kind, N GB.
make_source() {
    local kind=$1 n=$2 dir=$3
    mkdir -p "$dir"
    case $kind in
    random) head -c "$((n << 30))" /dev/urandom >"$dir/data" ;;
    text)
        # Log-like lines: compressible about 4-8x, few repeats of whole
        # chunks (a counter and a pseudo-random word on every line).
        python3 - "$dir/data" "$n" <<'EOF'
import random, sys
path, n = sys.argv[1], int(sys.argv[2])
words = [f"w{i:05d}" for i in range(20000)]
rnd = random.Random(17)
with open(path, "w") as f:
    written, i = 0, 0
    while written < n << 30:
        line = (f"{i:012d} GET /site/{rnd.choice(words)}/{rnd.choice(words)} "
                f"200 {rnd.randrange(1 << 20)} {rnd.choice(words)} ua={rnd.choice(words)}\n")
        f.write(line)
        written += len(line)
        i += 1
EOF
        ;;
    image)
        # A sparse image: 1 GiB data runs every 2 GiB (N GB of data).
        truncate -s "$((n << 31))" "$dir/disk.img"
        for i in $(seq 0 $((n - 1))); do
            head -c $((1 << 30)) /dev/urandom |
                dd of="$dir/disk.img" bs=1M seek=$((i * 2048)) conv=notrunc status=none
        done
        ;;
    esac
}

printf 'kind\tN_GB\tstep\twall_s\trss_MB\ts_per_GB\n'
for n in "${sizes[@]}"; do
    for kind in "${kinds[@]}"; do
        src=$work/src repo=$work/repo
        [ -n "${S3:-}" ] && repo=s3://kura/$kind-$n
        rm -rf "$src" "$repo" "$work/copy" "$work/restore" "$work/cache"
        export KURA_CACHE_DIR=$work/cache
        make_source "$kind" "$n" "$src"
        "${kura[@]}" -r "$repo" init --kdf-memory 19456 --kdf-passes 2 >/dev/null
        what=("$src")
        [ "$kind" = image ] && what=(--image "$src/disk.img")
        measure "$kind" "$n" backup "${kura[@]}" -r "$repo" backup -q "${what[@]}"
        echo "night $n" >"$src/small-change"
        [ "$kind" = image ] && printf 'night' |
            dd of="$src/disk.img" bs=1 seek=4096 conv=notrunc status=none
        measure "$kind" "$n" small-night "${kura[@]}" -r "$repo" backup -q "${what[@]}"
        rm -rf "$work/cache"
        measure "$kind" "$n" small-night-cold-cache "${kura[@]}" -r "$repo" backup -q "${what[@]}"
        if [ "$kind" = image ]; then
            measure "$kind" "$n" restore "${durably[@]}" "${kura[@]}" -r "$repo" restore latest \
                --image "$src/disk.img" --to "$work/restore.img"
            rm -f "$work/restore.img"
        else
            measure "$kind" "$n" restore "${durably[@]}" "${kura[@]}" -r "$repo" restore latest --target "$work/restore"
            rm -rf "$work/restore"
        fi
        measure "$kind" "$n" check-read-data "${kura[@]}" -r "$repo" check --read-data
        "${kura[@]}" -r "$work/copy" init --kdf-memory 19456 --kdf-passes 2 >/dev/null
        KURA_TO_PASSWORD=bench measure "$kind" "$n" copy \
            "${kura[@]}" -r "$repo" copy --to "$work/copy"
        rm -rf "$work/copy"
        rm -rf "$src"
        "${kura[@]}" -r "$repo" forget --keep-last 1 >/dev/null
        measure "$kind" "$n" prune "${kura[@]}" -r "$repo" prune --now
        # Then every snapshot forgotten: prune deletes all the data (and
        # on S3 frees Garage's disk for the next kind).
        "${kura[@]}" -r "$repo" forget --keep-tag no-such-tag >/dev/null
        measure "$kind" "$n" prune-all "${kura[@]}" -r "$repo" prune --now
    done
done
