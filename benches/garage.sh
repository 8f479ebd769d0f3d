# Sourced by the benches: starts Garage (scripts/install-test-servers.sh
# installs it) on free loopback ports with its data in "$work/garage", adds
# its pid to "pids", creates a key and the buckets named in the arguments,
# and exports what kura needs to reach it (KURA_S3_ENDPOINT, the key) and
# S3_PORT.
#
# Usage: start_garage BUCKET...   (needs $work and a pids array)
start_garage() {
    local garage s3_port rpc_port key b
    garage=$(command -v garage || echo "$HOME/.cargo/bin/garage")
    s3_port=$(free_port); rpc_port=$(free_port)
    cat >"$work/garage.toml" <<CONF
metadata_dir = "$work/garage/meta"
data_dir = "$work/garage/data"
db_engine = "sqlite"
replication_factor = 1
rpc_bind_addr = "127.0.0.1:$rpc_port"
rpc_public_addr = "127.0.0.1:$rpc_port"
rpc_secret = "$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"
[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:$s3_port"
root_domain = ".s3.garage.localhost"
CONF
    "$garage" -c "$work/garage.toml" server >"$work/garage.log" 2>&1 &
    pids+=($!)
    g() { "$garage" -c "$work/garage.toml" "$@"; }
    for _ in $(seq 100); do g node id -q >/dev/null 2>&1 && break; sleep 0.2; done
    g layout assign -z dc1 -c 1G "$(g node id -q | cut -d@ -f1)" >/dev/null
    g layout apply --version 1 >/dev/null
    key=$(g key create bench)
    AWS_ACCESS_KEY_ID=$(echo "$key" | awk '/Key ID:/ {print $3}')
    AWS_SECRET_ACCESS_KEY=$(echo "$key" | awk '/Secret key:/ {print $3}')
    export AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY
    for b in "$@"; do
        g bucket create "$b" >/dev/null
        g bucket allow --read --write --owner "$b" --key bench >/dev/null
    done
    export KURA_S3_ENDPOINT=http://127.0.0.1:$s3_port KURA_S3_REGION=garage
    export AWS_DEFAULT_REGION=garage S3_PORT=$s3_port
}

# A free TCP port on loopback.
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
