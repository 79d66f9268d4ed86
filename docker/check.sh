#!/usr/bin/env bash
# The container deployment, end to end (run by .ci/run after the tests): start a Docker engine if none runs
# (installing Debian's docker.io and docker-compose when absent), build the image on a base made from Debian's
# packages (docker/build.sh --local-base), bring up docker/compose.yaml's federation, run the checked queries and
# lookups against it, check every container's health status, and take it all down, volumes included. Prints
# each step's time. Exits non-zero at the first step that fails, after tearing down what it started.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
project="hpf-check-$$"
engine_log="${TMPDIR:-/tmp}/hpf-dockerd-$$.log"
started_engine=""
began=$(date +%s.%N)

step() {  # step NAME COMMAND...: run it, then print its time
    local name="$1" t0 t1
    shift
    t0=$(date +%s.%N)
    echo "[docker] $name ..." >&2
    "$@"
    t1=$(date +%s.%N)
    printf '[docker] %-34s %6.1f s\n' "$name:" "$(awk "BEGIN{print $t1 - $t0}")" >&2
}

quietly() {  # run a command, showing its output only when it fails
    local out
    out="$(mktemp)"
    "$@" > "$out" 2>&1 || { cat "$out" >&2; rm -f "$out"; return 1; }
    rm -f "$out"
}

compose() {
    if docker compose version > /dev/null 2>&1; then
        docker compose -f "$root/docker/compose.yaml" -p "$project" "$@"
    else
        docker-compose -f "$root/docker/compose.yaml" -p "$project" "$@"
    fi
}

engine() {
    if docker info > /dev/null 2>&1; then
        echo "engine: already running" >&2
        return
    fi
    local need=()
    command -v dockerd > /dev/null || need+=(docker.io)
    docker compose version > /dev/null 2>&1 || command -v docker-compose > /dev/null || need+=(docker-compose)
    if [ ${#need[@]} -gt 0 ]; then
        echo "engine: installing ${need[*]} (Debian's packages)" >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}" > /dev/null
    fi
    dockerd > "$engine_log" 2>&1 &
    started_engine=$!
    for _ in $(seq 60); do docker info > /dev/null 2>&1 && return; sleep 0.5; done
    tail -20 "$engine_log" >&2
    echo "engine: dockerd did not answer within 30 s" >&2
    return 1
}

free_base_port() {  # the first of 4 free loopback ports in a row, from 47051 up, with the 4 for metrics 100 above
    python3 - <<'PY'
import socket
for base in range(47051, 48000, 4):
    socks = []
    try:
        for port in [*range(base, base + 4), *range(base + 100, base + 104)]:
            s = socket.socket()
            socks.append(s)
            s.bind(("127.0.0.1", port))
        print(base)
        break
    except OSError:
        pass
    finally:
        for s in socks:
            s.close()
PY
}

up() {
    compose up -d
    local deadline=$((SECONDS + 180))
    while [ $SECONDS -lt $deadline ]; do
        [ "$(health coordinator)" = healthy ] && return
        sleep 1
    done
    compose ps >&2
    compose logs --tail 20 >&2
    echo "the coordinator was not healthy within 180 s" >&2
    return 1
}

health() {  # the Docker health status of a service's container
    docker inspect --format '{{.State.Health.Status}}' "$(compose ps -q "$1")" 2>/dev/null || echo missing
}

check_health() {
    local bad=0 status
    for service in shanghai hangzhou nanjing coordinator; do
        status="$(health "$service")"
        echo "  $service: $status" >&2
        [ "$status" = healthy ] || bad=1
    done
    local setup_exit
    setup_exit="$(docker inspect --format '{{.State.ExitCode}}' "$(compose ps -a -q setup 2>/dev/null || compose ps -q setup)")"
    echo "  setup: exited $setup_exit" >&2
    [ "$setup_exit" = 0 ] || bad=1
    return $bad
}

metrics() {  # every party's metrics on loopback: the nodes counted the questions they answered, and their audit
    python3 - "$HPF_BASE_PORT" <<'PY'
import re
import sys
import urllib.request

base = int(sys.argv[1])
wanted = {"coordinator": (base + 100, "Query")} | {
    node: (base + 101 + i, "ComputePartial") for i, node in enumerate(("shanghai", "hangzhou", "nanjing"))
}
bad = 0
for party, (port, operation) in wanted.items():
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    def total(name, *labels):
        return sum(
            float(m.group(2))
            for m in re.finditer(rf"^{name}(?:\{{(.*)\}})? (\S+)$", text, re.M)
            if all(label in (m.group(1) or "") for label in labels)
        )
    answered = total("hpf_requests_total", f'operation="{operation}"', 'code="OK"')
    appends = total("hpf_audit_appends_total") if party != "coordinator" else None
    said = f", audit appends {appends:.0f}" if appends is not None else ""
    print(f"  {party}: {operation} answered {answered:.0f}{said}", file=sys.stderr)
    bad |= answered < 1 or (appends is not None and appends < answered)
sys.exit(bad)
PY
}

audit() {  # each region's audit log, verified in the region's own container against the catalog's audit key
    for region in shanghai hangzhou nanjing; do
        compose exec -T "$region" hpf audit verify "/hpf/regions/$region/state/audit" \
            --catalog /hpf/federation/federation.yaml --node "$region" 2>&1 | sed "s/^/  $region: /" >&2
    done
}

teardown() {
    local code=$?
    if [ -n "${HPF_BASE_PORT:-}" ]; then
        [ $code -eq 0 ] || compose logs --tail 30 >&2 || true
        step "tear down (volumes too)" quietly compose down -v --remove-orphans || true
    fi
    if [ -n "$started_engine" ]; then
        kill "$started_engine" 2>/dev/null && wait "$started_engine" 2>/dev/null || true
        rm -f "$engine_log"
    fi
    printf '[docker] %-34s %6.1f s\n' "all:" "$(awk "BEGIN{print $(date +%s.%N) - $began}")" >&2
    exit $code
}
trap teardown EXIT

step "engine" engine
step "image (local Debian base)" "$root/docker/build.sh" --local-base
export HPF_BASE_PORT HPF_IMAGE="${HPF_IMAGE:-hpf-federation:latest}"
HPF_BASE_PORT="$(free_base_port)"
step "up: setup, 3 nodes, coordinator" quietly up
step "checked queries and lookups" compose run --rm check
step "audit log of every region" audit
step "health of every container" check_health
step "metrics of every party" metrics
