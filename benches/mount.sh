#!/usr/bin/env bash
# kura mount (issue 16): reading through the mount against kura's own
# restore and against restic mount, on the same data.
#   1. A 1 GiB file (random, so incompressible) backed up by kura and
#      restic; timed: `kura restore` of it, `cat` of it through
#      `kura mount`, `cat` of it through `restic mount`.
#   2. gen_site at SCALE, backed up by both; timed: `find` + `du -s` over
#      the mounted snapshot, each on a fresh mount.
# Prints one line per measurement: what, seconds, MB/s where it applies.
# Both repositories sit on the same local disk; the page cache is dropped
# before each measurement where this machine allows it.
#
# Usage: benches/mount.sh [SCALE] [FILE_MIB]   (defaults 1.0, 1024)
# Needs /dev/fuse, fusermount (fuse3) and restic.
set -euo pipefail
cd "$(dirname "$0")/.."
scale=${1:-1.0}
mib=${2:-1024}
gen=tests/fixtures/gen_site.py
command -v restic >/dev/null || { echo "apt-get install restic" >&2; exit 1; }
cargo build --release --quiet --bin kura
kura=${CARGO_TARGET_DIR:-$PWD/target}/release/kura
work=$(mktemp -d "${TMPDIR:-/tmp}/kura-mount-bench.XXXXXX")
mnt=$work/mnt
cleanup() {
    fusermount -u -z "$mnt" 2>/dev/null || true
    [ -n "${pid:-}" ] && kill "$pid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
export KURA_PASSWORD=bench RESTIC_PASSWORD=bench KURA_CACHE_DIR=$work/kura-cache
export RESTIC_CACHE_DIR=$work/restic-cache KURA_LOG=error
mkdir -p "$mnt" "$work/src"
"$kura" -r "$work/kura" init --kdf-memory 19456 --kdf-passes 2 >/dev/null
restic -r "$work/restic" init -q >/dev/null

drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true; }
seconds() { # command...: wall seconds
    drop_caches
    local t0 t1
    t0=$(date +%s.%N)
    "$@" >/dev/null
    t1=$(date +%s.%N)
    echo "$t1 - $t0" | bc
}
mounted() { grep -q " $mnt " /proc/self/mounts; }
mount_with() { # tool: starts the mount in the background, waits for it
    case $1 in
        kura) "$kura" -r "$work/kura" mount "$mnt" 2>>"$work/mount.log" & ;;
        restic) restic -r "$work/restic" mount "$mnt" >>"$work/mount.log" 2>&1 & ;;
    esac
    pid=$!
    for _ in $(seq 600); do mounted && break; sleep 0.1; done
    mounted || { cat "$work/mount.log" >&2; exit 1; }
    # restic shows snapshots/latest only once snapshots/ was listed.
    ls "$mnt/snapshots" >/dev/null
}
unmount() {
    fusermount -u "$mnt"
    wait "$pid" || true
    pid=
}
in_snapshot() { # tool relative-path: the path of the latest snapshot's copy
    case $1 in
        kura) echo "$mnt/latest/$2" ;;
        restic) echo "$mnt/snapshots/latest/$2" ;;
    esac
}
report() { # what seconds [MiB]
    if [ -n "${3:-}" ]; then
        printf '%-36s %8.2f s %8.0f MB/s\n' "$1" "$2" "$(echo "$3 * 1.048576 / $2" | bc -l)"
    else
        printf '%-36s %8.2f s\n' "$1" "$2"
    fi
}

# 1. Sequential read of one large file.
head -c "$((mib << 20))" /dev/urandom >"$work/src/big.bin"
"$kura" -r "$work/kura" backup --quiet "$work/src" >/dev/null
restic -r "$work/restic" backup -q "$work/src" >/dev/null
rel=${work#/}/src/big.bin
t=$(seconds "$kura" -r "$work/kura" restore latest --target "$work/restored")
report "kura restore (${mib} MiB file)" "$t" "$mib"
cmp "$work/restored/$rel" "$work/src/big.bin"
rm -rf "$work/restored"
for tool in kura restic; do
    mount_with "$tool"
    t=$(seconds cat "$(in_snapshot "$tool" "$rel")")
    report "$tool mount: cat (${mib} MiB file)" "$t" "$mib"
    unmount
done
rm -f "$work/src/big.bin"

# 2. Metadata: find + du over a gen_site snapshot.
python3 "$gen" "$work/site" --night 0 --scale "$scale" >/dev/null
files=$(find "$work/site" -type f | wc -l)
"$kura" -r "$work/kura" backup --quiet "$work/site" >/dev/null
restic -r "$work/restic" backup -q "$work/site" >/dev/null
for tool in kura restic; do
    mount_with "$tool"
    dir=$(in_snapshot "$tool" "${work#/}/site")
    t=$(seconds sh -c "find '$dir' | wc -l && du -s '$dir'")
    report "$tool mount: find + du ($files files)" "$t"
    unmount
done
