#!/usr/bin/env bash
# Remote repositories (issue 5): backup and restore throughput of kura over
# SFTP (OpenSSH's sshd) and S3 (Garage) on loopback, against kura on a local
# directory and restic on the same SFTP server and the same Garage, in one
# run. gen_site night 0 then night 1 are backed up; the last night is
# restored and compared with the source. Servers are started here on free
# ports (scripts/install-test-servers.sh installs them).
#
# Usage: benches/remote.sh [SCALE]   (default 0.25)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=benches/garage.sh
. benches/garage.sh
scale=${1:-0.25}
gen=../shared/bench/gen_site.py
command -v restic >/dev/null || { echo "apt-get install restic" >&2; exit 1; }
scripts/install-test-servers.sh >/dev/null
cargo build --release --quiet --bin kura
kura=${KURA_BIN:-${CARGO_TARGET_DIR:-$PWD/target}/release/kura}  # KURA_BIN: another build to measure
work=$(mktemp -d "${TMPDIR:-/tmp}/kura-remote.XXXXXX")
pids=()
cleanup() { for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

# --- sshd
ssh_port=$(free_port)
ssh-keygen -q -t ed25519 -N '' -f "$work/host_key"
ssh-keygen -q -t ed25519 -N '' -f "$work/client_key"
cp "$work/client_key.pub" "$work/authorized_keys"
mkdir -p /run/sshd "$work/sftp"
cat >"$work/sshd_config" <<EOF
Port $ssh_port
ListenAddress 127.0.0.1
HostKey $work/host_key
AuthorizedKeysFile $work/authorized_keys
PidFile $work/sshd.pid
StrictModes no
PasswordAuthentication no
UsePAM no
Subsystem sftp internal-sftp
EOF
echo "[127.0.0.1]:$ssh_port $(cat "$work/host_key.pub")" >"$work/known_hosts"
cat >"$work/ssh_config" <<EOF
Host bench
  HostName 127.0.0.1
  Port $ssh_port
  User $(id -un)
  IdentityFile $work/client_key
  IdentitiesOnly yes
  UserKnownHostsFile $work/known_hosts
EOF
/usr/sbin/sshd -D -f "$work/sshd_config" -E "$work/sshd.log" &
pids+=($!)

# --- Garage
start_garage kura restic
for _ in $(seq 100); do (echo >/dev/tcp/127.0.0.1/$ssh_port) 2>/dev/null && break; sleep 0.1; done

export KURA_PASSWORD=bench RESTIC_PASSWORD=bench KURA_SSH_CONFIG=$work/ssh_config
root=$work/site
declare -A repo=(
    [kura-local]="$work/kura-local"
    [kura-sftp]="sftp://bench/$work/sftp/kura"
    [kura-s3]="s3://kura/repo"
    [restic-sftp]="sftp:bench:$work/sftp/restic"
    [restic-s3]="s3:http://127.0.0.1:$S3_PORT/restic/repo"
)
tools=(kura-local kura-sftp kura-s3 restic-sftp restic-s3)
cmd_for() { # tool -> CMD (the tool with its repository options)
    case $1 in
        kura-*) CMD=(env KURA_CACHE_DIR="$work/cache-$1" "$kura" -r "${repo[$1]}") ;;
        restic-*) CMD=(env RESTIC_CACHE_DIR="$work/cache-$1" restic -o "sftp.command=ssh -F $work/ssh_config bench -s sftp" -r "${repo[$1]}") ;;
    esac
}
run() { cmd_for "$1"; shift; "${CMD[@]}" "$@"; }
measure() { # label tool args...
    local label=$1 tool=$2; shift 2
    cmd_for "$tool"
    sync
    /usr/bin/time -f '%e %U %S %M' -o "$work/time" "${CMD[@]}" "$@" >/dev/null 2>"$work/err" || { cat "$work/err" >&2; exit 1; }
    read -r wall user sys rss <"$work/time"
    printf '%s\t%s\t%s\t%.2f\t%s\n' "$tool" "$label" "$wall" "$(echo "$user + $sys" | bc)" "$((rss / 1024))"
}
for tool in "${tools[@]}"; do
    case $tool in
        kura-*) run "$tool" init --kdf-memory 19456 --kdf-passes 2 >/dev/null ;;
        restic-*) run "$tool" init -q >/dev/null ;;
    esac
done
printf 'tool\tstep\twall_s\tcpu_s\trss_MB\n'
for night in 0 1; do
    python3 "$gen" "$root" --night "$night" --scale "$scale" >/dev/null
    for tool in "${tools[@]}"; do
        case $tool in
            kura-*) measure "backup-$night" "$tool" backup --host bench --quiet "$root" ;;
            restic-*) measure "backup-$night" "$tool" backup -q --host bench "$root" ;;
        esac
    done
done
apparent=$(du -sb --apparent-size "$root" | cut -f1)
(cd "$root" && find . -type f -print0 | sort -z | xargs -0 sha256sum) >"$work/want"
for tool in "${tools[@]}"; do
    target=$work/r-$tool
    case $tool in
        kura-*) measure restore "$tool" restore latest --target "$target" ;;
        restic-*) measure restore "$tool" restore latest --target "$target" ;;
    esac
    if (cd "$target$root" && find . -type f -print0 | sort -z | xargs -0 sha256sum) | cmp -s - "$work/want"; then
        echo "$tool restore identical"
    else
        echo "$tool restore DIFFERS"
    fi
    rm -rf "$target"
done
echo "data: $((apparent / 1000000)) MB apparent"
