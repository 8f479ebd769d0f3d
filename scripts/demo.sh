#!/usr/bin/env bash
# Local demo (README.md, "Set-up"): builds kura, creates a repository in a
# temporary directory, shows its keys and config, then stores a sample tree
# twice through the chunk store and reads every file back.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet --bin kura --example store_tree
work=$(mktemp -d "${TMPDIR:-/tmp}/kura-demo.XXXXXX")
export KURA_REPOSITORY="$work/repo" KURA_PASSWORD="demo password"
source_dir=${1:-}
if [ -z "$source_dir" ]; then
    source_dir="$work/site"
    if [ -x ../shared/bench/gen_site.py ] && command -v python3 >/dev/null; then
        python3 ../shared/bench/gen_site.py "$source_dir" --night 0 --scale 0.05
    else
        mkdir -p "$source_dir" && cp -r src format-spec "$source_dir/"
    fi
fi
echo "== kura init"
target/release/kura init
echo "== kura key list"
target/release/kura key list
echo "== kura config show"
target/release/kura config show
echo "== store $source_dir twice, then read it all back"
target/release/examples/store_tree "$KURA_REPOSITORY" "$source_dir"
du -sh "$KURA_REPOSITORY"
echo "demo repository left in $work/repo (password: demo password)"
