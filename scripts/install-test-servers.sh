#!/usr/bin/env bash
# Installs the real servers the remote backend tests start on 127.0.0.1
# (tests/integration/servers.rs): OpenSSH's sshd (Debian's openssh-server)
# and Garage 2.5, an S3-compatible object store (`cargo install garage
# --locked`, about 13 minutes on 2 cores; an installed binary is reused).
# Run by .ci/run and scripts/test.sh; safe to run again.
set -euo pipefail

if ! [ -x /usr/sbin/sshd ] || ! command -v ssh-keygen >/dev/null 2>&1 || ! command -v ssh >/dev/null 2>&1; then
    echo "== installing openssh-server and openssh-client (sshd for the SFTP tests)"
    if [ "$(id -u)" -ne 0 ]; then
        echo "need root to apt-get install openssh-server openssh-client" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends openssh-server openssh-client
fi

if ! command -v garage >/dev/null 2>&1 && ! [ -x "${CARGO_HOME:-$HOME/.cargo}/bin/garage" ]; then
    echo "== installing Garage 2.5 (S3-compatible server for the S3 tests; ~13 minutes)"
    cargo install garage --version 2.5.0 --locked
fi
garage_bin=$(command -v garage || echo "${CARGO_HOME:-$HOME/.cargo}/bin/garage")
echo "sshd: $(/usr/sbin/sshd -V 2>&1 | head -1 || true)"
echo "garage: $("$garage_bin" --version 2>&1 | head -1)"
