#!/usr/bin/env bash
# Local demo (README.md, "Set-up"): builds kura, generates a small web
# server tree (tests/fixtures/gen_site.py), backs it up on two "nights",
# lists the snapshots, shows what changed, restores the latest one and
# compares it with the source.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet --bin kura
kura=$PWD/target/release/kura
work=$(mktemp -d "${TMPDIR:-/tmp}/kura-demo.XXXXXX")
export KURA_REPOSITORY="$work/repo" KURA_PASSWORD="demo password" KURA_CACHE_DIR="$work/cache"
site="$work/site"
night() {
    if command -v python3 >/dev/null; then
        python3 tests/fixtures/gen_site.py "$site" --night "$1" --scale 0.05
    else
        mkdir -p "$site" && cp -r src format-spec "$site/" && date >"$site/night-$1"
    fi
}
echo "== kura init"
"$kura" init
echo "== night 0: kura backup $site"
night 0
"$kura" backup "$site"
echo "== night 1: kura backup $site (unchanged files are not read)"
night 1
"$kura" backup "$site"
echo "== kura snapshots"
"$kura" snapshots
echo "== kura diff (night 0 -> night 1)"
"$kura" diff "$("$kura" --json snapshots | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["id"])')" latest | tail -n 5
echo "== kura restore latest"
"$kura" restore latest --target "$work/restored"
diff -r "$site" "$work/restored$site" && echo "restored tree is identical to the source"
du -sh "$work/repo" "$site"
echo "demo repository left in $work/repo (password: demo password)"
