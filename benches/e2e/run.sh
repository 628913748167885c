#!/usr/bin/env bash
# End-to-end benchmark: stickyd (uring and epoll backends) against the SO_REUSEPORT ceiling,
# nginx, HAProxy and sticky-session-custom, each with 2 workers, driven by wrk on loopback; and
# Node workers under stickyd --ipc node against sticky-session-custom and Node's own cluster
# round-robin (not sticky: the Node ceiling), with the same Node handler (node/handler.js).
#
#   W1  a new connection per request (`Connection: close`), X-Forwarded-For varying over 4,096
#       addresses: connections per second, p99 latency, CPU per connection.
#   W2  keep-alive, GET /bytes/1048576: MiB per second, CPU per GiB.
#   W3  keep-alive through HAProxy reusing its server connections (`http-reuse always`), the
#       X-Forwarded-For varying from one request to the next on each connection: stickyd
#       with --rehash-per-request behind it, against HAProxy alone hashing the header to the
#       2 workers (`balance hdr()`, the reference) and stickyd without the flag; requests per
#       second, and how many of 200 probe requests sent during the load strayed from their
#       key's worker.
#
# Usage: benches/e2e/run.sh              (from anywhere; run as root so that it can install)
# Settings (environment):
#   RUNS=3          repetitions of every (system, workload); systems alternate between them
#   DURATION=10     seconds per measured run
#   WARMUP=5        seconds of W1 after each start, not measured
#   SETTLE=6        seconds of quiet between W1 and W2
#   CONNS_W1=32 CONNS_W2=8 THREADS=2     wrk's connections and threads
#   SYSTEMS="uring epoll ceiling nginx haproxy sticky node nodecluster"   which systems, in this
#                   order (node: Node workers under stickyd --ipc node; nodecluster: Node's
#                   cluster round-robin); SYSTEMS= runs none of them (W3 only, say)
#   W3="rehash hash plain"   the W3 systems (after the others; needs HAProxy): rehash:
#                   HAProxy -> stickyd --rehash-per-request; hash: HAProxy balance hdr() ->
#                   the 2 workers; plain: HAProxy -> stickyd without the flag. W3= skips W3
#   CONNS_W3=32     wrk's connections in W3
#   BASE_PORT=18000 the ports used, BASE_PORT..BASE_PORT+109, all on 127.0.0.1
#   INSTALL=1       install what is missing (apt-get: wrk nginx haproxy nodejs npm linux-perf
#                   strace; npm: sticky-session-custom); 0 skips what is missing instead
#   BUILD=1         cargo build --release --workspace --bins --examples first
#   URING_CALLS=1   count io_uring_enter calls per connection for stickyd uring (perf, or strace)
#   STICKYD_ARGS="--threads 2"   more stickyd flags (both backends), e.g. dispatcher threads
#   WORK=DIR        where logs, configs and raw results go (default: a new /tmp/stickyd-e2e.*)
#   PLACEMENT=same  same: every system under test runs in this script's session, as wrk does;
#                   own: each is started with setsid, in a session (and, with
#                   kernel.sched_autogroup_enabled=1, a scheduling group) of its own, as a
#                   service manager starts it. The report says which.
#   THREADS_SWEEP="1 2 4 8 16"   after the systems, stickyd uring under W1 with --threads N
#                   for each N: conn/s, master CPU and the busiest thread's CPU per
#                   connection, as a table and as an SVG plot ($WORK/threads.svg)
#
# Not run by CI or `cargo test`. Every process it starts is stopped on exit; everything binds
# 127.0.0.1 only; every wait is bounded. The load generator shares the machine's cores with the
# system under test: absolute numbers are for this machine, ratios are the point.
set -euo pipefail

RUNS=${RUNS:-3}
DURATION=${DURATION:-10}
# A warm-up puts the measured W1 window in the steady state (connections, timers and worker
# restarts of the start behind it), and a quiet pause keeps W1's tail out of the W2 window.
WARMUP=${WARMUP:-5}
SETTLE=${SETTLE:-6}
CONNS_W1=${CONNS_W1:-32}
CONNS_W2=${CONNS_W2:-8}
CONNS_W3=${CONNS_W3:-32}
W3=${W3-"rehash hash plain"}
THREADS=${THREADS:-2}
SYSTEMS=${SYSTEMS-"uring epoll ceiling nginx haproxy sticky node nodecluster"}
BASE_PORT=${BASE_PORT:-18000}
INSTALL=${INSTALL:-1}
BUILD=${BUILD:-1}
STICKYD_ARGS=${STICKYD_ARGS:-}
URING_CALLS=${URING_CALLS:-1}
PLACEMENT=${PLACEMENT:-same}
THREADS_SWEEP=${THREADS_SWEEP:-}
STICKY_VERSION=1.2.1

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
STICKYD=$TARGET/release/stickyd
HELLO=$TARGET/release/examples/hello_worker
# hello_worker's connection code on a SO_REUSEPORT listener of its own (reuseport_worker.rs).
BASELINE=$TARGET/release/examples/reuseport_worker
WORK=${WORK:-$(mktemp -d /tmp/stickyd-e2e.XXXXXX)}
mkdir -p "$WORK"
RESULTS=$WORK/results.tsv
STRAYS=$WORK/strays.tsv
HZ=$(getconf CLK_TCK)

say() { printf '%s\n' "$*" >&2; }

# ---------------------------------------------------------------------------------------------
# Processes: every one started is recorded, and stopped on exit.

STARTED=()
cleanup() {
    local pid
    for pid in "${STARTED[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    while [ "${#STARTED[@]}" -gt 0 ]; do
        stop_pid "${STARTED[0]}"
    done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# start LOG CMD...: runs CMD in the background; its pid in $LAST_PID. With PLACEMENT=own, in a
# session of its own (setsid execs in place: the pid is the command's).
start() {
    local log=$1
    shift
    if [ "$PLACEMENT" = own ]; then
        setsid "$@" >"$log" 2>&1 &
    else
        "$@" >"$log" 2>&1 &
    fi
    LAST_PID=$!
    STARTED+=("$LAST_PID")
}

# stop_pid PID: SIGTERM, up to 10 s, then SIGKILL; reaped and forgotten (its number may be
# reused by then).
stop_pid() {
    local pid=$1 i kept=()
    if kill -TERM "$pid" 2>/dev/null; then
        for ((i = 0; i < 100; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
    for i in "${STARTED[@]}"; do
        [ "$i" = "$pid" ] || kept+=("$i")
    done
    STARTED=("${kept[@]}")
}

children() { cat /proc/"$1"/task/*/children 2>/dev/null || true; }

# wait_children: the two workers of a Node cluster's primary $MAIN in WORKERS (5 s at most).
wait_children() {
    local i
    for ((i = 0; i < 50; i++)); do
        WORKERS=$(children "$MAIN")
        [ "$(echo "$WORKERS" | wc -w)" -ge 2 ] && break
        sleep 0.1
    done
}

# wait_http PORT: until a request with an X-Forwarded-For is answered 200 (10 s at most).
wait_http() {
    local i
    for ((i = 0; i < 100; i++)); do
        if curl -fs -o /dev/null --max-time 1 -H 'X-Forwarded-For: 198.19.255.1' \
            "http://127.0.0.1:$1/"; then
            return 0
        fi
        sleep 0.1
    done
    say "nothing answers on 127.0.0.1:$1"
    return 1
}

# ---------------------------------------------------------------------------------------------
# What the benchmark needs.

APT_UPDATED=0
apt_install() {
    [ "$INSTALL" = 1 ] && command -v apt-get >/dev/null || return 1
    if [ "$APT_UPDATED" = 0 ]; then
        say "apt-get update"
        DEBIAN_FRONTEND=noninteractive apt-get update -qq >"$WORK/apt.log" 2>&1 || return 1
        APT_UPDATED=1
    fi
    say "apt-get install $*"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" \
        >>"$WORK/apt.log" 2>&1
}

have() { command -v "$1" >/dev/null 2>&1; }

install_tools() {
    have wrk || apt_install wrk || true
    have curl || apt_install curl ca-certificates || true
    have wrk || { say "wrk is missing and could not be installed: no benchmark"; exit 1; }
    have curl || { say "curl is missing and could not be installed: no benchmark"; exit 1; }
    local want=() s
    for s in $SYSTEMS; do
        case $s in
            nginx) have nginx || apt_install nginx || true ;;
            haproxy) have haproxy || apt_install haproxy || true ;;
            sticky)
                { have node && have npm; } || apt_install nodejs npm || true
                install_sticky || true
                ;;
            node | nodecluster) have node || apt_install nodejs || true ;;
        esac
        if available "$s"; then
            want+=("$s")
        else
            say "skipping $s: $(why_missing "$s")"
        fi
    done
    SYSTEMS=${want[*]}
    if [ -n "$W3" ]; then
        have haproxy || apt_install haproxy || true
        have haproxy || { say "skipping W3: HAProxy is not installed and apt-get could not install it"; W3=; }
    fi
    if [ "$URING_CALLS" = 1 ] && ! have perf && ! have strace; then
        apt_install linux-perf || apt_install strace || true
    fi
}

STICKY_DIR=${STICKY_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/stickyd-e2e/node}
install_sticky() {
    [ -f "$STICKY_DIR/node_modules/sticky-session-custom/package.json" ] && return 0
    [ "$INSTALL" = 1 ] && have npm || return 1
    mkdir -p "$STICKY_DIR"
    say "npm install sticky-session-custom@$STICKY_VERSION (in $STICKY_DIR)"
    [ -f "$STICKY_DIR/package.json" ] || echo '{"private": true}' >"$STICKY_DIR/package.json"
    (cd "$STICKY_DIR" && npm install --no-audit --no-fund --silent \
        "sticky-session-custom@$STICKY_VERSION" >"$WORK/npm.log" 2>&1)
}

available() {
    case $1 in
        uring | epoll | ceiling) return 0 ;;
        nginx) have nginx ;;
        haproxy) have haproxy ;;
        sticky) have node && [ -f "$STICKY_DIR/node_modules/sticky-session-custom/package.json" ] ;;
        node | nodecluster) have node ;;
        *) return 1 ;;
    esac
}

why_missing() {
    case $1 in
        nginx | haproxy) echo "$1 is not installed and apt-get could not install it" ;;
        sticky) echo "node or sticky-session-custom@$STICKY_VERSION could not be installed" ;;
        node | nodecluster) echo "node is not installed and apt-get could not install it" ;;
        *) echo "unknown system (known: uring epoll ceiling nginx haproxy sticky node nodecluster)" ;;
    esac
}

# ---------------------------------------------------------------------------------------------
# The systems. start_SYSTEM sets PORT (where wrk goes), DISPATCHER (pids whose CPU is the
# dispatcher's: empty for the ceiling), WORKERS (the two workers' pids), METRICS (stickyd's
# metrics port, or empty) and MAIN (the pids to stop).

port_of() {
    local i=0 s
    for s in uring epoll ceiling nginx haproxy sticky node nodecluster rehash hash plain; do
        [ "$s" = "$1" ] && { echo $((BASE_PORT + 10 * i)); return; }
        i=$((i + 1))
    done
}

start_stickyd() {
    local backend=$1
    PORT=$(port_of "$backend")
    METRICS=$((PORT + 1))
    start "$WORK/$backend.log" "$STICKYD" --listen "127.0.0.1:$PORT" --backend "$backend" \
        --key header:x-forwarded-for --workers 2 --metrics "127.0.0.1:$METRICS" --grace 2s \
        $STICKYD_ARGS -- "$HELLO"
    MAIN=$LAST_PID
    DISPATCHER=$LAST_PID
    wait_http "$PORT" || return 1
    WORKERS=$(children "$MAIN")
}
start_uring() { start_stickyd uring; }
start_epoll() { start_stickyd epoll; }

# start_backends BASE: hello_worker's worker 0 on BASE+1, 1 on BASE+2 (each alone on its port).
start_backends() {
    local pids=() id
    for id in 0 1; do
        start "$WORK/backend$id.log" "$BASELINE" --listen "127.0.0.1:$(($1 + 1 + id))" --id "$id"
        pids+=("$LAST_PID")
        wait_http $(($1 + 1 + id)) || return 1
    done
    WORKERS=${pids[*]}
}

start_ceiling() {
    PORT=$(port_of ceiling)
    METRICS=
    DISPATCHER=
    local pids=() id
    for id in 0 1; do
        start "$WORK/ceiling$id.log" "$BASELINE" --listen "127.0.0.1:$PORT" --id "$id"
        pids+=("$LAST_PID")
    done
    WORKERS=${pids[*]}
    MAIN=$WORKERS
    wait_http "$PORT" || return 1
}

fill() {
    sed -e "s|@WORK@|$WORK|g" -e "s|@PORT@|$PORT|g" \
        -e "s|@BACKEND0@|$((PORT + 1))|g" -e "s|@BACKEND1@|$((PORT + 2))|g" "$1" >"$2"
}

start_nginx() {
    PORT=$(port_of nginx)
    METRICS=
    start_backends "$PORT" || { MAIN=$WORKERS; return 1; }
    fill "$HERE/nginx.conf.in" "$WORK/nginx.conf"
    start "$WORK/nginx.log" nginx -c "$WORK/nginx.conf" -p "$WORK"
    MAIN="$LAST_PID $WORKERS"
    wait_http "$PORT" || return 1
    DISPATCHER="$LAST_PID $(children "$LAST_PID")"
}

# start_haproxy [NAME]: HAProxy hashing X-Forwarded-For to the 2 workers (NAME's port).
start_haproxy() {
    local name=${1:-haproxy}
    PORT=$(port_of "$name")
    METRICS=
    start_backends "$PORT" || { MAIN=$WORKERS; return 1; }
    fill "$HERE/haproxy.cfg.in" "$WORK/$name.cfg"
    start "$WORK/$name.log" haproxy -db -f "$WORK/$name.cfg"
    MAIN="$LAST_PID $WORKERS"
    wait_http "$PORT" || return 1
    DISPATCHER=$LAST_PID
}

# W3's systems: HAProxy in front, reusing its server connections.
start_hash() { start_haproxy hash; }

# start_reused NAME FLAGS...: HAProxy on NAME's port, reusing its connections to stickyd (on
# the next port, with FLAGS), which serves them with the 2 workers.
start_reused() {
    local name=$1
    shift
    PORT=$(port_of "$name")
    METRICS=$((PORT + 3))
    start "$WORK/$name-stickyd.log" "$STICKYD" --listen "127.0.0.1:$((PORT + 1))" \
        --key header:x-forwarded-for --workers 2 --metrics "127.0.0.1:$METRICS" --grace 2s \
        "$@" $STICKYD_ARGS -- "$HELLO"
    local stickyd=$LAST_PID
    MAIN=$stickyd
    wait_http $((PORT + 1)) || return 1
    WORKERS=$(children "$stickyd")
    fill "$HERE/haproxy-reuse.cfg.in" "$WORK/$name.cfg"
    start "$WORK/$name.log" haproxy -db -f "$WORK/$name.cfg"
    MAIN="$LAST_PID $stickyd"
    DISPATCHER="$LAST_PID $stickyd"
    wait_http "$PORT" || return 1
}
start_rehash() { start_reused rehash --rehash-per-request; }
start_plain() { start_reused plain; }

start_sticky() {
    PORT=$(port_of sticky)
    METRICS=
    start "$WORK/sticky.log" env PORT="$PORT" WORKERS=2 NODE_PATH="$STICKY_DIR/node_modules" \
        node "$HERE/sticky/app.js"
    MAIN=$LAST_PID
    DISPATCHER=$LAST_PID
    wait_http "$PORT" || return 1
    wait_children
}

# Node workers under stickyd, through Node's IPC channel.
start_node() {
    PORT=$(port_of node)
    METRICS=$((PORT + 1))
    start "$WORK/node.log" env PORT="$PORT" "$STICKYD" --listen "127.0.0.1:$PORT" --ipc node \
        --key header:x-forwarded-for --workers 2 --metrics "127.0.0.1:$METRICS" --grace 2s \
        $STICKYD_ARGS -- node "$HERE/node/app.js"
    MAIN=$LAST_PID
    DISPATCHER=$LAST_PID
    wait_http "$PORT" || return 1
    WORKERS=$(children "$MAIN")
}

# Node's own cluster, round-robin: not sticky, the Node ceiling.
start_nodecluster() {
    PORT=$(port_of nodecluster)
    METRICS=
    start "$WORK/nodecluster.log" env MODE=cluster PORT="$PORT" WORKERS=2 node "$HERE/node/app.js"
    MAIN=$LAST_PID
    DISPATCHER=$LAST_PID
    wait_http "$PORT" || return 1
    wait_children
}

stop_system() {
    local pid
    for pid in $MAIN; do stop_pid "$pid"; done
}

# ---------------------------------------------------------------------------------------------
# Measuring.

# ticks PID...: user + system clock ticks of these processes (all their threads).
ticks() {
    local pid sum=0 t
    for pid in "$@"; do
        t=$(awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$pid/stat" 2>/dev/null) || t=0
        sum=$((sum + ${t:-0}))
    done
    echo "$sum"
}

# busy_ticks: the whole machine's non-idle ticks.
busy_ticks() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9; exit }' /proc/stat; }

# thread_ticks PID...: "TID TICKS" for every thread of these processes.
thread_ticks() {
    local pid t
    for pid in "$@"; do
        for t in /proc/"$pid"/task/*; do
            awk -v tid="${t##*/}" '{ sub(/^.*\) /, ""); print tid, $12 + $13 }' "$t/stat" \
                2>/dev/null || true
        done
    done
}

# busiest BEFORE AFTER: the largest tick delta of one thread between two thread_ticks outputs.
busiest() {
    awk 'NR == FNR { t[$1] = $2; next } { d = $2 - t[$1]; if (d > m) m = d } END { print m + 0 }' \
        <(echo "$1") <(echo "$2")
}

# dispatched: stickyd's dispatched counter, summed over workers and listeners (0 if none).
dispatched() {
    [ -n "$METRICS" ] || { echo 0; return; }
    { curl -fs --max-time 2 "http://127.0.0.1:$METRICS/metrics" || true; } |
        awk '/^stickyd_connections_dispatched_total/ { n += $NF } END { printf "%.0f\n", n }'
}

# wrk_run WORKLOAD SECONDS OUT: wrk against $PORT; its RESULT line and CPU seconds in OUT.
wrk_run() {
    local workload=$1 seconds=$2 out=$3 conns=$CONNS_W1
    [ "$workload" = w2 ] && conns=$CONNS_W2
    [ "$workload" = w3 ] && conns=$CONNS_W3
    local TIMEFORMAT='CPU %U %S'
    {
        time timeout $((seconds + 30)) wrk -t "$THREADS" -c "$conns" -d "${seconds}s" \
            --timeout 5s -s "$HERE/load.lua" "http://127.0.0.1:$PORT/" -- "$workload" \
            >"$out.wrk" 2>&1
    } 2>"$out.cpu" || true
    cat "$out.wrk" "$out.cpu" >"$out"
}

# measure SYSTEM WORKLOAD REP: one measured run, one row in $RESULTS.
measure() {
    local sys=$1 workload=$2 rep=$3 out=$WORK/$1-$2-$3.out
    local d0 w0 b0 n0 d1 w1 b1 n1 t0 t1
    # shellcheck disable=SC2086
    d0=$(ticks $DISPATCHER) w0=$(ticks $WORKERS) b0=$(busy_ticks) n0=$(dispatched)
    # shellcheck disable=SC2086
    t0=$(thread_ticks $DISPATCHER)
    wrk_run "$workload" "$DURATION" "$out"
    # shellcheck disable=SC2086
    d1=$(ticks $DISPATCHER) w1=$(ticks $WORKERS) b1=$(busy_ticks) n1=$(dispatched)
    # shellcheck disable=SC2086
    t1=$(thread_ticks $DISPATCHER)
    local result cpu
    result=$(grep '^RESULT' "$out" || true)
    cpu=$(awk '/^CPU / { print $2 + $3 }' "$out")
    if [ -z "$result" ]; then
        say "  $sys $workload run $rep: wrk printed no result (see $out)"
        return
    fi
    # RESULT requests= bytes= duration_us= p50_us= p99_us= errors= non2xx=
    echo "$result" | awk -v sys="$sys" -v wl="$workload" -v rep="$rep" -v hz="$HZ" \
        -v disp=$((d1 - d0)) -v work=$((w1 - w0)) -v busy=$((b1 - b0)) -v wrkcpu="${cpu:-0}" \
        -v dispatched=$((n1 - n0)) -v top="$(busiest "$t0" "$t1")" '
        { for (i = 2; i <= NF; i++) { split($i, kv, "="); r[kv[1]] = kv[2] } }
        END {
            # %.0f, not %d: in mawk, %d stops at 2^31 - 1 (bytes go past it).
            printf "%s\t%s\t%s\t%.0f\t%.0f\t%.0f\t%.0f\t%.0f\t%.0f\t%.2f\t%.2f\t%.2f\t%.2f\t%.0f\t%.2f\n",
                sys, wl, rep, r["requests"], r["bytes"], r["duration_us"], r["p99_us"],
                r["errors"], r["non2xx"], disp / hz, work / hz, wrkcpu, busy / hz, dispatched,
                top / hz
        }' >>"$RESULTS"
    tail -n 1 "$RESULTS" | awk -F'\t' '{
        s = $6 / 1e6
        if ($2 == "w1") printf "  %-8s w1 run %s: %8.0f conn/s  p99 %6.2f ms  errors %d\n", $1, $3, $4 / s, $7 / 1e3, $8 + $9
        else printf "  %-8s w2 run %s: %8.0f MiB/s   p99 %6.2f ms  errors %d\n", $1, $3, $5 / s / 1048576, $7 / 1e3, $8 + $9
    }' >&2
}

# stickiness SYSTEM: 200 new connections, 19 X-Forwarded-For values (an odd number: with 20, a
# round-robin over 2 workers sends every value to one worker and looks sticky); a request whose
# value was answered more often by another worker is a stray. (Behind HAProxy, W3, the
# connections are HAProxy's clients': its server connections are reused.)
stickiness() {
    local sys=$1 out=$WORK/$1-sticky.txt i v w
    : >"$out"
    for ((i = 0; i < 200; i++)); do
        v=198.19.0.$((i % 19 + 1))
        w=$(curl -s --max-time 5 -o /dev/null -D - -H "X-Forwarded-For: $v" \
            -H 'Connection: close' "http://127.0.0.1:$PORT/" |
            tr -d '\r' | awk -F': *' 'tolower($1) == "x-worker" { print $2 }') || true
        echo "$v ${w:-none}" >>"$out"
    done
    awk -v sys="$sys" '
        { n[$1 " " $2]++; total[$1]++ }
        END {
            for (k in n) { split(k, a, " "); if (n[k] > best[a[1]]) best[a[1]] = n[k] }
            for (v in total) strays += total[v] - best[v]
            printf "%s\t%d\n", sys, strays
        }' "$out" >>"$STRAYS"
    say "  $sys stickiness: $(cut -f2 <(tail -n 1 "$STRAYS")) of 200 requests strayed"
}

# uring_calls: io_uring_enter calls per dispatched connection, stickyd uring under W1; the
# line to print goes in URING_RESULT.
uring_calls() {
    URING_RESULT="not measured (URING_CALLS=0)"
    [ "$URING_CALLS" = 1 ] || return 0
    URING_RESULT="not measured (uring not run)"
    case " $SYSTEMS " in *" uring "*) ;; *) return 0 ;; esac
    local window=$((DURATION > 5 ? DURATION - 3 : 2)) tool n0 n1 calls= load
    local out=$WORK/uring-calls
    say "counting io_uring_enter calls of the stickyd uring master under W1"
    start_uring || { stop_system; URING_RESULT="not measured: stickyd did not start"; return 0; }
    wrk_run w1 "$WARMUP" "$out.warmup"
    wrk_run w1 $((window + 2)) "$out.load" &
    load=$!
    sleep 1
    n0=$(dispatched)
    if have perf && perf stat -e syscalls:sys_enter_io_uring_enter -- true >/dev/null 2>&1; then
        tool="perf stat -e syscalls:sys_enter_io_uring_enter -p MASTER, ${window}s under W1"
        perf stat -x, -e syscalls:sys_enter_io_uring_enter -p "$DISPATCHER" -- sleep "$window" \
            2>"$out.perf" || true
        calls=$(awk -F, '/io_uring_enter/ { print $1; exit }' "$out.perf")
    elif have strace; then
        tool="strace -c -f, ${window}s under W1 (strace slows the master: indicative only)"
        timeout -s INT "$window" strace -c -f -e trace=io_uring_enter -p "$DISPATCHER" \
            2>"$out.strace" || true
        calls=$(awk '$NF == "io_uring_enter" { print $4; exit }' "$out.strace")
    else
        tool=none
    fi
    n1=$(dispatched)
    wait "$load" || true
    stop_system
    if [ "$tool" = none ]; then
        URING_RESULT="not measured: neither perf nor strace is available"
    elif ! [ "${calls:-x}" -eq "${calls:-x}" ] 2>/dev/null; then
        URING_RESULT="not measured: $tool gave no count (see $out.*)"
    elif [ $((n1 - n0)) -le 0 ]; then
        URING_RESULT="not measured: no connection dispatched in the window"
    else
        URING_RESULT=$(awk -v c="$calls" -v n=$((n1 - n0)) -v tool="$tool" 'BEGIN {
            printf "%.3f calls per dispatched connection (%.0f calls, %.0f connections; %s)", c / n, c, n, tool
        }')
    fi
}

# The awk functions both reports use: values added under a key, and their median.
AWK_MEDIAN='
    function median(key,    n, i, j, t, a) {
        n = cnt[key]
        if (n == 0) return -1
        for (i = 1; i <= n; i++) a[i] = val[key, i]
        for (i = 2; i <= n; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] > t; j--) a[j + 1] = a[j]; a[j + 1] = t }
        return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
    }
    function add(key, v) { cnt[key]++; val[key, cnt[key]] = v }
'
# The reports' awk: the medians, ratios, and the strays per system read from strays_file.
AWK_REPORT="$AWK_MEDIAN"'
    function ratio(a, b) { return (a > 0 && b > 0) ? sprintf("%.2fx", a / b) : "n/a" }
    function read_strays(    line, f) {
        while ((getline line < strays_file) > 0) { split(line, f, "\t"); stray[f[1]] = f[2] }
    }
'

# threads_sweep: stickyd uring under W1 with --threads N for each N of THREADS_SWEEP, RUNS times
# (the counts alternating within each repetition); rows "tN" in $RESULTS.
threads_sweep() {
    [ -n "$THREADS_SWEEP" ] || return 0
    local n rep saved=$STICKYD_ARGS
    for ((rep = 1; rep <= RUNS; rep++)); do
        say "threads sweep, repetition $rep of $RUNS: --threads $THREADS_SWEEP"
        for n in $THREADS_SWEEP; do
            STICKYD_ARGS="$saved --threads $n"
            if ! start_stickyd uring; then
                say "  stickyd --threads $n did not start (see $WORK/uring.log)"
                stop_system
                continue
            fi
            wrk_run w1 "$WARMUP" "$WORK/t$n-warmup-$rep.out"
            measure "t$n" w1 "$rep"
            stop_system
        done
    done
    STICKYD_ARGS=$saved
}

# sweep_report: the sweep's table, and its plot in $WORK/threads.svg.
sweep_report() {
    [ -n "$THREADS_SWEEP" ] || return 0
    awk -F'\t' -v sweep="$THREADS_SWEEP" -v svg="$WORK/threads.svg" "$AWK_MEDIAN"'
    $1 ~ /^t[0-9]+$/ && $2 == "w1" {
        n = substr($1, 2); s = $6 / 1e6
        add(n SUBSEP "rate", $4 / s)
        if ($14 > 0) { add(n SUBSEP "master", $10 / $14 * 1e6); add(n SUBSEP "top", $15 / $14 * 1e6) }
    }
    END {
        k = split(sweep, ns, " ")
        printf "\nThreads sweep: stickyd uring, W1, --threads N (medians)\n"
        printf "| threads | conn/s | vs 1 thread | stickyd CPU us/conn | busiest thread us/conn |\n"
        printf "| ---: | ---: | ---: | ---: | ---: |\n"
        base = median(ns[1] SUBSEP "rate"); maxr = 0
        for (i = 1; i <= k; i++) {
            r = median(ns[i] SUBSEP "rate")
            if (r < 0) continue
            if (r > maxr) maxr = r
            printf "| %d | %.0f | %s | %.1f | %.1f |\n", ns[i], r, \
                (base > 0) ? sprintf("%.2fx", r / base) : "n/a", \
                median(ns[i] SUBSEP "master"), median(ns[i] SUBSEP "top")
        }
        # The plot: conn/s against threads, one point per count, on a 640x360 canvas.
        w = 640; h = 360; l = 70; b = 40; t = 20; rgt = 20
        printf "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" font-family=\"sans-serif\" font-size=\"12\">\n", w, h > svg
        printf "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n" > svg
        printf "<text x=\"%d\" y=\"14\">stickyd uring, W1: connections per second by --threads</text>\n", l > svg
        printf "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"black\"/>\n", l, h - b, w - rgt, h - b > svg
        printf "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"black\"/>\n", l, t, l, h - b > svg
        top = maxr > 0 ? maxr * 1.1 : 1
        for (g = 0; g <= 4; g++) {
            y = h - b - (h - b - t) * g / 4
            printf "<text x=\"%d\" y=\"%d\" text-anchor=\"end\">%.0f</text>\n", l - 6, y + 4, top * g / 4 > svg
        }
        pts = ""
        for (i = 1; i <= k; i++) {
            x = (k > 1) ? l + (w - l - rgt) * (i - 1) / (k - 1) : l + (w - l - rgt) / 2
            printf "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\">%d</text>\n", x, h - b + 16, ns[i] > svg
            r = median(ns[i] SUBSEP "rate")
            if (r < 0) continue
            y = h - b - (h - b - t) * r / top
            pts = pts sprintf("%.1f,%.1f ", x, y)
            printf "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"4\" fill=\"steelblue\"/>\n", x, y > svg
        }
        printf "<polyline points=\"%s\" fill=\"none\" stroke=\"steelblue\" stroke-width=\"2\"/>\n", pts > svg
        printf "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\">--threads</text>\n", (l + w - rgt) / 2, h - 6 > svg
        printf "</svg>\n" > svg
        printf "plot: %s\n", svg
    }' "$RESULTS"
}

# w3_phase: the W3 systems, RUNS times (the order rotating); on the first repetition the
# stickiness probe runs while wrk loads the system (its warm-up), so that HAProxy's server
# connections are busy and reused by requests of every key.
w3_phase() {
    [ -n "$W3" ] || return 0
    local rep i s order systems=($W3) load
    for ((rep = 1; rep <= RUNS; rep++)); do
        order=()
        for ((i = 0; i < ${#systems[@]}; i++)); do
            order+=("${systems[$(((i + rep - 1) % ${#systems[@]}))]}")
        done
        say "W3, repetition $rep of $RUNS: ${order[*]}"
        for s in "${order[@]}"; do
            if ! "start_$s"; then
                say "  $s did not start (see $WORK/$s*.log)"
                stop_system
                continue
            fi
            if [ "$rep" = 1 ]; then
                wrk_run w3 "$((WARMUP + 10))" "$WORK/w3$s-warmup-$rep.out" &
                load=$!
                sleep 1
                stickiness "w3$s"
                wait "$load" || true
            else
                wrk_run w3 "$WARMUP" "$WORK/w3$s-warmup-$rep.out"
            fi
            measure "w3$s" w3 "$rep"
            stop_system
        done
    done
}

# w3_report: W3's table and ratios.
w3_report() {
    [ -n "$W3" ] || return 0
    awk -F'\t' -v systems="$W3" -v strays_file="$STRAYS" "$AWK_REPORT"'
    BEGIN {
        read_strays()
        label["rehash"] = "HAProxy reuse -> stickyd --rehash-per-request"
        label["hash"] = "HAProxy reuse, balance hdr() (reference)"
        label["plain"] = "HAProxy reuse -> stickyd (no flag)"
    }
    $2 == "w3" {
        k = $1; s = $6 / 1e6
        add(k SUBSEP "rate", $4 / s)
        add(k SUBSEP "p99", $7 / 1e3)
        add(k SUBSEP "err", $8 + $9)
        add(k SUBSEP "disp", $4 ? $10 / $4 * 1e6 : 0)
    }
    END {
        n = split(systems, sys, " ")
        printf "\nW3: keep-alive through HAProxy reusing its server connections, X-Forwarded-For varying per request (medians)\n"
        printf "| %-46s | %7s | %6s | %-24s | %-22s | %6s |\n", "system", "req/s", "p99 ms", \
            "CPU us/req: HAProxy+stickyd", "served by key owner", "errors"
        printf "| %s | %s | %s | %s | %s | %s |\n", "---", "---:", "---:", "---:", "---", "---:"
        for (i = 1; i <= n; i++) {
            k = "w3" sys[i]
            if (!cnt[k SUBSEP "rate"]) continue
            owner = (k in stray) ? sprintf("%.1f%% (%d of 200 strayed)", (200 - stray[k]) / 2, stray[k]) : "n/a"
            printf "| %-46s | %7.0f | %6.2f | %24.1f | %-22s | %6d |\n", label[sys[i]], \
                median(k SUBSEP "rate"), median(k SUBSEP "p99"), median(k SUBSEP "disp"), owner, median(k SUBSEP "err")
        }
        r = median("w3rehash" SUBSEP "rate")
        printf "W3  stickyd --rehash-per-request vs HAProxy balance hdr() %s, vs stickyd without the flag %s\n", \
            ratio(r, median("w3hash" SUBSEP "rate")), ratio(r, median("w3plain" SUBSEP "rate"))
    }' "$RESULTS"
}

# ---------------------------------------------------------------------------------------------
# The report: medians over the runs, then the ratios.

report() {
    [ -n "$SYSTEMS" ] || return 0
    awk -F'\t' -v systems="$SYSTEMS" -v strays_file="$STRAYS" "$AWK_REPORT"'
    BEGIN {
        read_strays()
        label["uring"] = "stickyd, uring backend"
        label["epoll"] = "stickyd, epoll backend"
        label["ceiling"] = "SO_REUSEPORT ceiling, no dispatcher"
        label["nginx"] = "nginx, hash consistent, 1 worker"
        label["haproxy"] = "HAProxy, hdr() consistent, 1 thread"
        label["sticky"] = "sticky-session-custom, Node cluster"
        label["node"] = "Node workers, stickyd --ipc node"
        label["nodecluster"] = "Node cluster round-robin (not sticky)"
    }
    {
        k = $1 SUBSEP $2; s = $6 / 1e6; conns = $4
        add(k SUBSEP "p99", $7 / 1e3)
        add(k SUBSEP "err", $8 + $9)
        add(k SUBSEP "other", ($13 - $10 - $11 - $12) / s * 100)
        if ($2 == "w1") {
            add(k SUBSEP "rate", $4 / s)
            add(k SUBSEP "disp", conns ? $10 / conns * 1e6 : 0)
            add(k SUBSEP "work", conns ? $11 / conns * 1e6 : 0)
            add(k SUBSEP "wrk", conns ? $12 / conns * 1e6 : 0)
            if ($14 > 0) add(k SUBSEP "master", $10 / $14 * 1e6)
        } else {
            gib = $5 / 1073741824
            add(k SUBSEP "rate", $5 / s / 1048576)
            add(k SUBSEP "disp", gib ? $10 / gib : 0)
            add(k SUBSEP "work", gib ? $11 / gib : 0)
            add(k SUBSEP "wrk", gib ? $12 / gib : 0)
        }
    }
    END {
        n = split(systems, sys, " ")
        printf "\nW1: a new connection per request, X-Forwarded-For varying (medians)\n"
        printf "| %-36s | %7s | %6s | %-37s | %-10s | %6s |\n", "system", "conn/s", "p99 ms", \
            "CPU us/conn: dispatcher, workers, wrk", "strays", "errors"
        printf "| %s | %s | %s | %s | %s | %s |\n", "---", "---:", "---:", "---", "---", "---:"
        for (i = 1; i <= n; i++) {
            k = sys[i] SUBSEP "w1"
            if (!cnt[k SUBSEP "rate"]) continue
            d = sys[i] == "ceiling" ? "none" : sprintf("%.1f", median(k SUBSEP "disp"))
            cpu = sprintf("%s, %.1f, %.1f", d, median(k SUBSEP "work"), median(k SUBSEP "wrk"))
            printf "| %-36s | %7.0f | %6.2f | %-37s | %-10s | %6d |\n", label[sys[i]], \
                median(k SUBSEP "rate"), median(k SUBSEP "p99"), cpu, \
                (sys[i] in stray) ? stray[sys[i]] " of 200" : "n/a", median(k SUBSEP "err")
        }
        printf "(CPU us per connection = CPU ms per 1,000 connections)\n"
        printf "\nW2: keep-alive, GET /bytes/1048576 (medians)\n"
        printf "| %-36s | %7s | %6s | %-37s | %6s |\n", "system", "MiB/s", "p99 ms", \
            "CPU s/GiB: dispatcher, workers, wrk", "errors"
        printf "| %s | %s | %s | %s | %s |\n", "---", "---:", "---:", "---", "---:"
        for (i = 1; i <= n; i++) {
            k = sys[i] SUBSEP "w2"
            if (!cnt[k SUBSEP "rate"]) continue
            d = sys[i] == "ceiling" ? "none" : sprintf("%.3f", median(k SUBSEP "disp"))
            cpu = sprintf("%s, %.3f, %.3f", d, median(k SUBSEP "work"), median(k SUBSEP "wrk"))
            printf "| %-36s | %7.0f | %6.2f | %-37s | %6d |\n", label[sys[i]], \
                median(k SUBSEP "rate"), median(k SUBSEP "p99"), cpu, median(k SUBSEP "err")
        }
        printf "\nCPU not charged to the system under test or wrk (other processes, unattributed kernel time),\n"
        printf "median %% of one core:"
        for (i = 1; i <= n; i++) for (w = 1; w <= 2; w++) {
            k = sys[i] SUBSEP "w" w
            if (cnt[k SUBSEP "other"]) printf " %s/w%d %.0f%%", sys[i], w, median(k SUBSEP "other")
        }
        printf "\n\nRatios (medians of each side)\n"
        for (w = 1; w <= 2; w++) {
            u = median("uring" SUBSEP "w" w SUBSEP "rate")
            printf "W%d  uring vs ceiling %s, vs nginx %s, vs HAProxy %s, vs sticky-session-custom %s; epoll vs uring %s\n", w, \
                ratio(u, median("ceiling" SUBSEP "w" w SUBSEP "rate")), \
                ratio(u, median("nginx" SUBSEP "w" w SUBSEP "rate")), \
                ratio(u, median("haproxy" SUBSEP "w" w SUBSEP "rate")), \
                ratio(u, median("sticky" SUBSEP "w" w SUBSEP "rate")), \
                ratio(median("epoll" SUBSEP "w" w SUBSEP "rate"), u)
        }
        for (w = 1; w <= 2; w++) {
            u = median("node" SUBSEP "w" w SUBSEP "rate")
            if (u > 0) printf "W%d  Node workers: stickyd --ipc node vs sticky-session-custom %s, vs Node cluster round-robin %s\n", w, \
                ratio(u, median("sticky" SUBSEP "w" w SUBSEP "rate")), \
                ratio(u, median("nodecluster" SUBSEP "w" w SUBSEP "rate"))
        }
        up = median("uring" SUBSEP "w1" SUBSEP "p99"); cp = median("ceiling" SUBSEP "w1" SUBSEP "p99")
        if (up > 0 && cp > 0) printf "W1  p99: uring %.2f ms, ceiling %.2f ms (%s)\n", up, cp, ratio(up, cp)
        for (i = 1; i <= n; i++) {
            k = sys[i] SUBSEP "w1" SUBSEP "master"
            if (cnt[k]) printf "W1  stickyd %s master CPU per dispatched connection: %.1f us\n", sys[i], median(k)
        }
    }' "$RESULTS"
}

# ---------------------------------------------------------------------------------------------

main() {
    say "stickyd end-to-end benchmark; raw results in $WORK"
    install_tools
    if [ "$BUILD" = 1 ]; then
        say "cargo build --release --workspace --bins --examples"
        (cd "$ROOT" && cargo build --release --workspace --bins --examples) >"$WORK/build.log" 2>&1 ||
            { say "build failed (see $WORK/build.log)"; exit 1; }
    fi
    [ -x "$STICKYD" ] && [ -x "$HELLO" ] && [ -x "$BASELINE" ] ||
        { say "no $STICKYD, $HELLO or $BASELINE: build them first"; exit 1; }
    : >"$RESULTS"
    : >"$STRAYS"
    local load_before
    load_before=$(cut -d' ' -f1-3 /proc/loadavg)

    local rep i s order systems=($SYSTEMS)
    for ((rep = 1; rep <= RUNS; rep++)); do
        # Rotate the order each repetition, so no system always runs first or after the same one.
        order=()
        for ((i = 0; i < ${#systems[@]}; i++)); do
            order+=("${systems[$(((i + rep - 1) % ${#systems[@]}))]}")
        done
        say "repetition $rep of $RUNS: ${order[*]} (load average $(cut -d' ' -f1-3 /proc/loadavg))"
        for s in "${order[@]}"; do
            if ! "start_$s"; then
                say "  $s did not start (see $WORK/$s*.log)"
                stop_system
                continue
            fi
            [ "$rep" = 1 ] && stickiness "$s"
            wrk_run w1 "$WARMUP" "$WORK/$s-warmup-$rep.out"
            measure "$s" w1 "$rep"
            sleep "$SETTLE"
            measure "$s" w2 "$rep"
            stop_system
        done
    done
    uring_calls
    threads_sweep
    w3_phase

    echo
    echo "stickyd end-to-end benchmark, $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "machine: $(nproc) cores ($(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)), Linux $(uname -r)"
    echo "load average before: $load_before, after: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "runs: $RUNS x ${DURATION}s per system and workload (after ${WARMUP}s of W1 warm-up; ${SETTLE}s" \
        "pause before W2), systems alternating; wrk -t$THREADS, -c$CONNS_W1 (W1) / -c$CONNS_W2 (W2)," \
        "2 workers everywhere; stickyd with --metrics on"
    echo "the load generator shares the $(nproc) cores with the system under test"
    echo "placement: $PLACEMENT ($([ "$PLACEMENT" = own ] && echo "each system under test in a session of its own (setsid)" || echo "the systems under test in the same session as wrk")); kernel.sched_autogroup_enabled=$(cat /proc/sys/kernel/sched_autogroup_enabled 2>/dev/null || echo n/a)"
    echo "peers: $(versions)"
    report
    echo "io_uring_enter (stickyd uring master): $URING_RESULT"
    sweep_report
    w3_report
}

versions() {
    local v=()
    have nginx && v+=("$(nginx -v 2>&1 | sed 's|.*/||')")
    have haproxy && v+=("HAProxy $(haproxy -v | awk 'NR == 1 { print $3 }')")
    have node && v+=("Node $(node --version) with sticky-session-custom $STICKY_VERSION")
    v+=("$(wrk -v 2>&1 | awk 'NR == 1 { print $1, $2 }')")
    local IFS=,
    echo "${v[*]}" | sed 's/,/, /g'
}

main "$@"
