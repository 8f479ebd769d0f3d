#!/usr/bin/env bash
# Real PostgreSQL dumps (issue 14): a private cluster in a temp dir (unix
# socket only), pgbench data, and per night 6000 pgbench transactions then
# `pg_dump` plain and `pg_dump -Fc -Z0` into one directory, which kura,
# restic and borg (zstd,3) back up into their own repositories, one after
# the other. Prints per night wall and CPU seconds, peak RSS and the bytes
# added to each repository (du -sb before/after), then where kura's bytes
# went (data packs, tree packs, index files, snapshots; new chunks), then
# what grouping consecutive new chunks before compressing would store
# (benches/tools/pg_bytes.rs), then night 0 again into fresh kura
# repositories and cut with PG_KEYS (64) chunk keys, to show how much its
# size depends on the repository's random chunk key.
#
# Usage: benches/pg.sh [NIGHTS] [SCALE] [NIGHT0_REPEATS]   (defaults 4, 20, 5)
# NIGHTS counts night 0 (pgbench -i only). Needs the Debian packages
# postgresql, restic, borgbackup and bc (benches are not run by CI).
# Builds kura and the helper in release mode into $CARGO_TARGET_DIR
# (default /work/bench-target, where release dependencies are kept).
set -euo pipefail
cd "$(dirname "$0")/.."
nights=${1:-4}
scale=${2:-20}
repeats=${3:-5}
transactions=${PG_TRANSACTIONS:-6000}
for tool in restic borg bc; do
    command -v $tool >/dev/null || { echo "apt-get install postgresql restic borgbackup bc" >&2; exit 1; }
done
pgbin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
[ -x "$pgbin/initdb" ] || { echo "apt-get install postgresql" >&2; exit 1; }
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/work/bench-target}
cargo build --release --quiet --bin kura --example pg_bytes
kura=${KURA_BIN:-$CARGO_TARGET_DIR/release/kura}  # KURA_BIN: another build to measure
pg_bytes=$CARGO_TARGET_DIR/release/examples/pg_bytes
work=$(mktemp -d "${TMPDIR:-/tmp}/kura-pg.XXXXXX")
chmod 755 "$work"
export KURA_PASSWORD=bench RESTIC_PASSWORD=bench BORG_PASSPHRASE=bench KURA_CACHE_DIR=$work/kura-cache
export RESTIC_CACHE_DIR=$work/restic-cache BORG_BASE_DIR=$work/borg-base

# initdb refuses root: run the server as the postgres user when we are root.
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
pgdata=$work/pgdata sock=$work/sock
mkdir -p "$pgdata" "$sock"
[ "$(id -u)" = 0 ] && chown postgres "$pgdata" "$sock"
stop() {
    as_pg "$pgbin/pg_ctl" -D "$pgdata" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap stop EXIT
as_pg "$pgbin/initdb" -D "$pgdata" -U postgres --auth=trust >/dev/null
as_pg "$pgbin/pg_ctl" -D "$pgdata" -l "$sock/log" -w \
    -o "-c listen_addresses='' -k $sock -c fsync=off" start >/dev/null
pg=(-h "$sock" -U postgres)
"$pgbin/createdb" "${pg[@]}" bench
"$pgbin/pgbench" "${pg[@]}" -i -q -s "$scale" bench 2>/dev/null

"$kura" -r "$work/kura" init --kdf-memory 19456 --kdf-passes 2 >/dev/null
restic -r "$work/restic" init -q >/dev/null
borg init -e repokey "$work/borg" 2>/dev/null

measure() { # label night command... ; stdout kept in $work/out
    local label=$1 night=$2; shift 2
    sync
    /usr/bin/time -f '%e %U %S %M' -o "$work/time" "$@" >"$work/out" 2>"$work/err" || { cat "$work/err" >&2; exit 1; }
    read -r wall user sys rss <"$work/time"
    printf '%s\t%s\t%s\t%.2f\t%s\n' "$label" "$night" "$wall" "$(echo "$user + $sys" | bc)" "$((rss / 1024))" >>"$work/results"
}
size() { if [ -e "$1" ]; then du -sb "$1" | cut -f1; else echo 0; fi; }
mb() { printf '%.2f' "$(echo "$1 / 1000000" | bc -l)"; }
# kura's repository by folder, cumulative bytes: data index snapshots.
folders() { echo "$(size "$1/data") $(size "$1/index") $(size "$1/snapshots")"; }

dump=$work/dump
mkdir -p "$dump"
declare -A last=([kura]=0 [restic]=0 [borg]=0)
printf 'tool\tnight\twall_s\tcpu_s\trss_MB\trepo_MB\tadded_MB\n'
for night in $(seq 0 $((nights - 1))); do
    if [ "$night" -gt 0 ]; then
        "$pgbin/pgbench" "${pg[@]}" -t "$transactions" -n bench >/dev/null 2>&1
    fi
    mkdir -p "$work/nights/$night"
    "$pgbin/pg_dump" "${pg[@]}" -f "$work/nights/$night/bench.sql" bench
    "$pgbin/pg_dump" "${pg[@]}" -Fc -Z0 -f "$work/nights/$night/bench.dump" bench
    ln -f "$work/nights/$night"/* "$dump/"
    sync
    read -r d0 i0 s0 <<<"$(folders "$work/kura")"
    measure kura "$night" "$kura" -r "$work/kura" --json backup --host bench "$dump"
    cp "$work/out" "$work/kura-$night.json"
    read -r d1 i1 s1 <<<"$(folders "$work/kura")"
    echo "$night $((d1 - d0)) $((i1 - i0)) $((s1 - s0))" >>"$work/folders"
    "$pg_bytes" packs "$work/kura" >"$work/packs-$night"
    measure restic "$night" restic -r "$work/restic" backup -q --host bench "$dump"
    measure borg "$night" borg create --compression zstd,3 "$work/borg::n$night" "$dump"
    for tool in kura restic borg; do
        s=$(size "$work/$tool")
        line=$(grep -P "^$tool\t$night\t" "$work/results")
        printf '%s\t%s\t%s\n' "$line" "$(mb "$s")" "$(mb "$((s - ${last[$tool]}))")"
        last[$tool]=$s
    done
done
printf '\ndump sizes (bytes): %s\n' "$(du -b "$work/nights/0"/* | awk '{printf "%s %s  ", $2, $1}' | sed "s|$work/nights/0/||g")"

echo
echo "where kura's added bytes went, per night (bytes; packs split by pack headers)"
printf 'night\tdata_packs\t(blobs\tstored\traw\tbeside_blobs)\ttree_packs\t(blobs\tstored)\tindex\tsnapshots\tchunks_new\tbytes_stored\n'
prev_data="0 0 0 0 0" prev_tree="0 0 0 0 0"
for night in $(seq 0 $((nights - 1))); do
    # packs-N lines: kind packs P blobs B chunks C stored S raw R size Z beside_blobs O
    # (a blob is a compression group of chunks)
    data=$(awk '$1=="data"{print $5, $9, $11, $13, $15}' "$work/packs-$night")
    tree=$(awk '$1=="tree"{print $5, $9, $11, $13, $15}' "$work/packs-$night")
    read -r db ds dr dz dx <<<"$data"; read -r pb ps pr pz px <<<"$prev_data"
    read -r tb ts tr tz tx <<<"$tree"; read -r qb qs qr qz qx <<<"$prev_tree"
    read -r _ _ idx snap <<<"$(grep "^$night " "$work/folders")"
    summary=$(python3 -c 'import json,sys; s=json.load(open(sys.argv[1]))["summary"]; print(s["chunks_new"], s["bytes_stored"])' "$work/kura-$night.json")
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$night" $((dz - pz)) $((db - pb)) $((ds - ps)) $((dr - pr)) $((dx - px)) \
        $((tz - qz)) $((tb - qb)) $((ts - qs)) "$idx" "$snap" "${summary// /	}"
    prev_data=$data prev_tree=$tree
done

echo
echo "stored bytes of the new chunks, each alone vs groups of consecutive new chunks (zstd 3; payload only)"
for night in $(seq 0 $((nights - 1))); do
    dirs=()
    for n in $(seq 0 "$night"); do dirs+=("$work/nights/$n"); done
    "$pg_bytes" groups --repo "$work/kura" "${dirs[@]}" | sed "s/^/night $night\t/"
done

echo
echo "night 0 into $repeats fresh kura repositories (bytes: total data index snapshots)"
for i in $(seq 1 "$repeats"); do
    r=$work/kura-n0-$i
    KURA_CACHE_DIR=$work/cache-n0-$i "$kura" -r "$r" init --kdf-memory 19456 --kdf-passes 2 >/dev/null
    ln -f "$work/nights/0"/* "$dump/"
    KURA_CACHE_DIR=$work/cache-n0-$i "$kura" -r "$r" backup --quiet --host bench "$dump"
    printf 'run %s\t%s\t%s\t%s\t%s\t%s packs\n' "$i" "$(size "$r")" $(folders "$r") "$(find "$r/data" -type f | wc -l)"
    rm -rf "$r" "$work/cache-n0-$i"
done

# The spread above is chunk-key randomness: the same dumps cut with other
# keys give other chunk counts (pgbench_accounts is near-periodic text).
echo
echo "night 0 cut with ${PG_KEYS:-64} chunk keys: chunks, and zstd-3 payload of each chunk alone (bytes)"
"$pg_bytes" keys "${PG_KEYS:-64}" "$work/nights/0"/* >"$work/keys"
sort -t$'\t' -k2.8n "$work/keys" | awk -F'\t' '{split($2,c," "); split($4,a," "); n[NR]=c[2]; p[NR]=a[2]}
    END {m=int((NR+1)/2); printf "keys %d\tchunks min %d median %d max %d\tpayload at those: %d %d %d\n", NR, n[1], n[m], n[NR], p[1], p[m], p[NR]}'
awk -F'\t' '{split($2,c," "); if (c[2] > 2 * 5000) big++} END {printf "keys with more than 10000 chunks: %d of %d\n", big, NR}' "$work/keys"
