#!/usr/bin/env bash
# Many small files (issue 14): a generated tree of FILES small files
# (default 45 000; sizes 1 KB to 100 KB, log-uniform; about 60 % text that
# compresses, 40 % random bytes that does not; four levels of nested
# directories) is backed up by kura, restic and borg (zstd,3) into their
# own repositories, one after the other; then 2 % of the files are
# changed, 1 % added and 0.5 % removed, and the tree is backed up again;
# last, each tool restores night 1 into an empty directory and the result
# is compared with the source (SHA-256 of every file).
#
# Prints wall seconds, user and system (kernel) CPU seconds and peak RSS
# of every step, and repository growth. The tree is generated from a fixed
# seed, so every run backs up the same bytes.
#
# Usage: benches/smallfiles.sh [FILES]
#   KURA_BIN=path   the kura to measure (default: a release build here)
# Needs the Debian packages restic, borgbackup and bc.
set -euo pipefail
cd "$(dirname "$0")/.."
files=${1:-45000}
command -v restic >/dev/null || { echo "apt-get install restic borgbackup bc" >&2; exit 1; }
if [ -z "${KURA_BIN:-}" ]; then
    cargo build --release --quiet --bin kura
    KURA_BIN=${CARGO_TARGET_DIR:-$PWD/target}/release/kura
fi
kura=$KURA_BIN
work=$(mktemp -d "${TMPDIR:-/tmp}/kura-smallfiles.XXXXXX")
trap 'rm -rf "$work"' EXIT
root=$work/tree
export KURA_PASSWORD=bench RESTIC_PASSWORD=bench BORG_PASSPHRASE=bench
export KURA_CACHE_DIR=$work/kura-cache RESTIC_CACHE_DIR=$work/restic-cache BORG_BASE_DIR=$work/borg-base

# generate NIGHT: night 0 writes the tree; night 1 changes, adds and
# removes files, all from seeded generators.
generate() {
    python3 - "$root" "$files" "$1" <<'EOF'
import os, random, sys
root, files, night = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
# Text files are slices of one 8 MB text of random words, taken at random
# offsets (so no two share a chunk) with some words of their own.
g = random.Random(0)
vocab = ["".join(g.choice("abcdefghijklmnopqrstuvwxyz_") for _ in range(2 + i % 9)) for i in range(5000)]
text = " ".join(g.choices(vocab, k=1_300_000)).encode()

def content(rng):
    size = int(1000 * 100 ** rng.random())  # 1 KB .. 100 KB, log-uniform
    if rng.random() < 0.6:
        start = rng.randrange(len(text) - size)
        own = " ".join(rng.choices(vocab, k=size // 200)).encode()
        return (own + b"\n" + text[start:start + size])[:size]
    return rng.randbytes(size)

def path(i):
    r = random.Random(i * 7919)
    return os.path.join(root, "d%02d" % r.randrange(20), "e%02d" % r.randrange(12),
                        "f%02d" % r.randrange(8), "file%06d.%s" % (i, "txt" if i % 5 < 3 else "bin"))

def write(i, rng):
    p = path(i)
    os.makedirs(os.path.dirname(p), exist_ok=True)
    with open(p, "wb") as f:
        f.write(content(rng))

if night == 0:
    for i in range(files):
        write(i, random.Random(i))
else:
    rng = random.Random(1000 + night)
    for i in rng.sample(range(files), files // 50):
        write(i, random.Random((night << 32) + i))
    for i in range(files + (night - 1) * files // 100, files + night * files // 100):
        write(i, random.Random(i))
    for i in rng.sample(range(files), files // 200):
        try:
            os.remove(path(i))
        except FileNotFoundError:
            pass
EOF
}

measure() { # label command...
    local label=$1; shift
    sync
    /usr/bin/time -f '%e %U %S %M' -o "$work/time" "$@" >/dev/null 2>"$work/err" ||
        { cat "$work/err" >&2; exit 1; }
    read -r wall user sys rss <"$work/time"
    printf '%s\t%s\t%s\t%s\t%s' "$label" "$wall" "$user" "$sys" "$((rss / 1024))"
}
size() { du -sb "$1" | cut -f1; }
mb() { echo "$1 / 1000000" | bc -l | xargs printf '%.1f'; }

"$kura" -r "$work/kura" init --kdf-memory 19456 --kdf-passes 2 >/dev/null
restic -r "$work/restic" init -q >/dev/null
borg init -e repokey "$work/borg" 2>/dev/null
declare -A last=([kura]=0 [restic]=0 [borg]=0)
printf 'step\twall_s\tuser_s\tsys_s\trss_MB\tadded_MB\n'
for night in 0 1; do
    generate "$night"
    [ "$night" = 0 ] && echo "# night 0: $(find "$root" -type f | wc -l) files, $(mb "$(du -sb --apparent-size "$root" | cut -f1)") MB"
    for tool in kura restic borg; do
        case $tool in
        kura) cmd=("$kura" -r "$work/kura" backup --host bench --quiet "$root") ;;
        restic) cmd=(restic -r "$work/restic" backup -q --host bench "$root") ;;
        borg) cmd=(borg create --compression zstd,3 "$work/borg::n$night" "$root") ;;
        esac
        measure "$tool backup $night" "${cmd[@]}"
        s=$(size "$work/$tool")
        printf '\t%s\n' "$(mb "$((s - last[$tool]))")"
        last[$tool]=$s
    done
done
(cd "$root" && find . -type f -print0 | sort -z | xargs -0 sha256sum) >"$work/want"
same() { (cd "$1" && find . -type f -print0 | sort -z | xargs -0 sha256sum) | cmp -s - "$work/want" && echo yes || echo NO; }
echo
printf 'restore night 1\twall_s\tuser_s\tsys_s\trss_MB\tidentical\n'
measure "kura" "$kura" -r "$work/kura" restore latest --target "$work/r-kura"
printf '\t%s\n' "$(same "$work/r-kura$root")"
measure "restic" restic -r "$work/restic" restore latest --target "$work/r-restic"
printf '\t%s\n' "$(same "$work/r-restic$root")"
mkdir "$work/r-borg"
measure "borg" sh -c "cd '$work/r-borg' && borg extract '$work/borg::n1'"
printf '\t%s\n' "$(same "$work/r-borg$root")"
