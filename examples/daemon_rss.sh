#!/usr/bin/env bash
# Daemon memory per target (BENCHMARKS.md, "The daemon's RSS per target"):
# the real `mqtt-pulse` binary with SMALL, then BIG plain-TCP MQTT 3.1.1
# targets (keep-alive 5 s) on a private Mosquitto, each daemon fresh; once
# every target's `mqtt_client_up` is 1 and SETTLE seconds more have passed
# (longer than jemalloc's 10 s dirty decay, so the scrapes that polled for
# "all up" are not counted), its VmRSS. Prints the marginal RSS per target,
# (RSS(BIG) - RSS(SMALL)) / (BIG - SMALL): what one more target costs,
# without the process's fixed part.
#
#   cargo build --release --bin mqtt-pulse
#   examples/daemon_rss.sh target/release/mqtt-pulse [SMALL=1000] [BIG=10000] [SETTLE=20]
#
# A shell script rather than a Cargo example: it only starts processes and
# reads /proc, and a Cargo target would need a stub in the Dockerfile's
# dependency layer (tests/deploy/dockerfile.rs).
set -euo pipefail
binary=$1 small=${2:-1000} big=${3:-10000} settle=${4:-20}
ulimit -n "$(ulimit -Hn)"
dir=$(mktemp -d)
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
broker_port=$(free_port)
printf 'listener %s 127.0.0.1\nallow_anonymous true\nmax_connections -1\nlog_dest none\n' "$broker_port" >"$dir/mosquitto.conf"
mosquitto -c "$dir/mosquitto.conf" &
broker=$!
trap 'kill $broker 2>/dev/null; rm -rf "$dir"' EXIT

# Prints "<targets> <up> <VmRSS KiB>" for a fresh daemon with $1 targets.
rss_with() {
    local n=$1 web pid up=0
    web=$(free_port)
    {
        printf '[defaults]\nkeep_alive = "5s"\n\n'
        for i in $(seq 1 "$n"); do
            printf '[[target]]\nname = "t%05d"\nurl = "mqtt://127.0.0.1:%s"\n\n' "$i" "$broker_port"
        done
    } >"$dir/$n.toml"
    "$binary" --config.file "$dir/$n.toml" --web.listen-address "127.0.0.1:$web" \
        --log.level warn 2>"$dir/$n.log" &
    pid=$!
    for _ in $(seq 1 120); do
        up=$(curl -s "http://127.0.0.1:$web/metrics" | grep -c '^mqtt_client_up{.*} 1$' || true)
        [[ $up -ge $n ]] && break
        sleep 1
    done
    sleep "$settle"
    local rss
    rss=$(awk '/^VmRSS/ {print $2}' "/proc/$pid/status")
    kill "$pid"
    wait "$pid" 2>/dev/null || true
    echo "$n $up $rss"
}

read -r n1 up1 rss1 < <(rss_with "$small")
read -r n2 up2 rss2 < <(rss_with "$big")
[[ $up1 -eq $n1 && $up2 -eq $n2 ]] || { echo "not all up: $up1/$n1, $up2/$n2" >&2; exit 1; }
awk -v n1="$n1" -v r1="$rss1" -v n2="$n2" -v r2="$rss2" 'BEGIN {
    printf "marginal RSS per target: %.1f KiB (%d KiB with %d targets, %d KiB with %d, all up)\n",
        (r2 - r1) / (n2 - n1), r1, n1, r2, n2 }'
