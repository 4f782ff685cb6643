#!/usr/bin/env bash
# benches/compare.sh: revecho against its peers, measured by the server's
# CPU time per connection (see docs/benchmarks.md).
#
#   benches/compare.sh                                   # full: 3 s per point, 5 rounds
#   COMPARE_SECONDS=1 COMPARE_ROUNDS=1 benches/compare.sh # quick smoke test
#
# Each server runs pinned to CPU 0 and `revecho bench` to CPU 1. Within each
# round every point runs every server in turn, so a slow phase of a shared
# machine hits them all alike. A server's cost is the utime+stime of its
# process (/proc/PID/stat) over a run, divided by the connections the run
# completed. The script prints the Markdown tables and writes them, with the
# chart docs/benchmarks.svg, into the marked section of docs/benchmarks.md.
#
# Environment:
#   COMPARE_SECONDS    measured seconds per run (default 3)
#   COMPARE_ROUNDS     rounds (default 5)
#   COMPARE_IDLE       idle connections for the memory point (default 10000)
#   COMPARE_CALLGRIND  0 skips the callgrind instruction counts (default 1)
#   COMPARE_DOCS       0 leaves docs/ alone, chart included (default 1)
#   COMPARE_ONLY       idle_effect: only the idle-connection latency rounds
#                      (implies COMPARE_DOCS=0)
set -euo pipefail

seconds=${COMPARE_SECONDS:-3}
rounds=${COMPARE_ROUNDS:-5}
idle_count=${COMPARE_IDLE:-10000}
callgrind=${COMPARE_CALLGRIND:-1}
write_docs=${COMPARE_DOCS:-1}
only=${COMPARE_ONLY:-}
# A partial run must not replace the page's full tables.
[[ -n $only ]] && write_docs=0

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
work=$(mktemp -d)
results="$work/results.tsv"
: >"$results"
server_pid=""
holder_pid=""

cleanup() {
    for pid in $server_pid $holder_pid; do
        kill "$pid" 2>/dev/null || true
    done
    rm -rf "$work"
}
trap cleanup EXIT
# Interrupted: exit, so that the EXIT trap stops the servers and the holder.
trap 'exit 130' INT TERM

say() { printf '%s\n' "$*" >&2; }
die() { say "compare.sh: $*"; exit 1; }

# --- tools ------------------------------------------------------------------

# need COMMAND PACKAGE: installs PACKAGE with apt-get when COMMAND is missing
# and we are root; otherwise says what to install.
need() {
    command -v "$1" >/dev/null 2>&1 && return 0
    if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null 2>&1; then
        say "installing $2 (for $1)"
        apt-get update -qq >/dev/null && apt-get install -y -qq "$2" >/dev/null
    fi
    command -v "$1" >/dev/null 2>&1 || die "$1 is missing: install the $2 package"
}
need taskset util-linux
need gcc gcc
need python3 python3
if [[ $callgrind == 1 ]]; then need valgrind valgrind; fi
(( $(nproc) >= 2 )) || die "needs 2 CPUs: the servers run on CPU 0, the load on CPU 1"

say "building (release)"
cargo build --release --quiet --bin revecho
cargo build --release --quiet -p revecho-peers
gcc -O2 -Wall -o "$work/epoll_peer" benches/peers/c/epoll_peer.c
revecho="$root/target/release/revecho"
tokio_peer="$root/target/release/tokio_peer"
threads_peer="$root/target/release/threads_peer"
asyncio_peer="python3 $root/benches/peers/python/asyncio_peer.py"
c_peer="$work/epoll_peer"
report="$root/target/release/report"

# 10,000 idle connections need as many descriptors in each process.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
ticks_per_second=$(getconf CLK_TCK)

# --- one server -------------------------------------------------------------

# start_server COMMAND...: starts it on CPU 0 (taskset execs it, so its PID
# is the server's) and waits for "listening on ADDR"; sets server_pid and
# server_addr.
start_server() {
    local out="$work/server.out"
    : >"$out"
    taskset -c 0 "$@" >"$out" 2>"$work/server.err" &
    server_pid=$!
    local waited=0
    until grep -q '^listening on ' "$out"; do
        kill -0 "$server_pid" 2>/dev/null || die "server $* exited: $(cat "$work/server.err")"
        (( waited++ < 1000 )) || die "server $* printed no address in 10 s"
        sleep 0.01
    done
    server_addr=$(sed -n 's/^listening on //p' "$out" | head -n 1)
}

stop_server() {
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
    server_pid=""
}

# The server's utime+stime in clock ticks; all its threads, live or ended.
cpu_ticks() { sed 's/^.*) //' "/proc/$server_pid/stat" | awk '{print $12 + $13}'; }

# VmRSS of the server in KiB.
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$server_pid/status"; }

# bench ARGS...: revecho bench on CPU 1 against the server; prints its JSON.
# A run with errors exits non-zero; the errors are recorded, not fatal.
bench() { taskset -c 1 "$revecho" bench --connect "$server_addr" --json "$@" || true; }

# field JSON NAME
field() { python3 -c 'import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])' "$1" "$2"; }

record() { printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$@" >>"$results"; }

# cpu_point POINT LABEL ROUND "SERVER COMMAND" BENCH ARGS...: one run, one line.
cpu_point() {
    local point=$1 label=$2 round=$3 command=$4
    shift 4
    # shellcheck disable=SC2086 # the command is words on purpose
    start_server $command
    bench --requests 300 "$@" >/dev/null # warm up, not counted
    local before json after completed errors
    before=$(cpu_ticks)
    json=$(bench --duration "${seconds}s" "$@")
    # Let the last lingering closes finish before reading the clock.
    sleep 0.2
    after=$(cpu_ticks)
    stop_server
    completed=$(field "$json" completed)
    errors=$(field "$json" errors)
    local cost
    cost=$(awk -v t=$((after - before)) -v hz="$ticks_per_second" -v n="$completed" \
        'BEGIN { if (n > 0) printf "%.3f", t * 1e6 / hz / n; else print "nan" }')
    record cpu_us "$point" "$label" "$round" "$cost" "$errors"
    say "  $point, $label: $cost µs/connection ($completed connections, $errors errors)"
}

# --- the matrix ---------------------------------------------------------------

# Servers in each close: revecho first (the reference of every ratio).
lingering_servers=(
    "revecho|$revecho -q --listen 127.0.0.1:0"
    "C epoll|$c_peer --linger"
    "tokio current_thread|$tokio_peer --linger"
    "std threads|$threads_peer --linger"
    "Python asyncio|$asyncio_peer --linger"
)
plain_servers=(
    "revecho --linger 0|$revecho -q --listen 127.0.0.1:0 --linger 0"
    "C epoll|$c_peer"
    "tokio current_thread|$tokio_peer"
    "std threads|$threads_peer"
    "Python asyncio|$asyncio_peer"
)
eof_servers=(
    "revecho|$revecho -q --listen 127.0.0.1:0 --framing eof"
    "C epoll|$c_peer --framing eof"
    "tokio current_thread|$tokio_peer --framing eof"
    "std threads|$threads_peer --framing eof"
    "Python asyncio|$asyncio_peer --framing eof"
)
# Idle connections: revecho's timeouts pushed out so none fires while held,
# but every connection still holds its pending deadline, as in production.
idle_servers=(
    "revecho|$revecho -q --listen 127.0.0.1:0 --idle-timeout 10m --read-timeout 10m --max-connections $idle_count"
    "C epoll|$c_peer"
    "tokio current_thread|$tokio_peer"
    "std threads|$threads_peer"
    "Python asyncio|$asyncio_peer"
)

# idle_point LABEL ROUND "SERVER COMMAND": RSS growth per idle connection.
idle_point() {
    local label=$1 round=$2 command=$3
    # shellcheck disable=SC2086
    start_server $command
    bench --requests 200 --concurrency 8 >/dev/null # warm up the allocator
    local before after
    before=$(rss_kib)
    taskset -c 1 "$revecho" bench --connect "$server_addr" --json --concurrency 64 \
        --idle "$idle_count" --hold 600s >"$work/idle.json" 2>"$work/idle.err" &
    holder_pid=$!
    local waited=0
    # All connected on the client's side, then all accepted on the server's.
    until grep -q '^holding' "$work/idle.err" || ! kill -0 "$holder_pid" 2>/dev/null; do
        (( waited++ < 6000 )) || break
        sleep 0.01
    done
    waited=0
    until (( $(ls "/proc/$server_pid/fd" | wc -l) >= idle_count )); do
        (( waited++ < 1000 )) || break
        sleep 0.01
    done
    after=$(rss_kib)
    local held errors=0
    held=$(ls "/proc/$server_pid/fd" | wc -l)
    (( held >= idle_count )) || errors=$((idle_count - held))
    kill "$holder_pid" 2>/dev/null || true
    wait "$holder_pid" 2>/dev/null || true
    holder_pid=""
    stop_server
    local cost
    cost=$(awk -v a="$after" -v b="$before" -v n="$idle_count" 'BEGIN { printf "%.3f", (a - b) / n }')
    record rss_kib "$idle_count idle connections" "$label" "$round" "$cost" "$errors"
    say "  idle, $label: $cost KiB/connection (RSS $before -> $after KiB)"
}

# idle_effect ROUND: one client's exchange latency with and without 5,000
# idle connections held open on the same revecho.
idle_effect() {
    local round=$1 json without with
    start_server "$revecho" -q --listen 127.0.0.1:0 --idle-timeout 10m --read-timeout 10m
    bench --requests 300 --concurrency 1 >/dev/null
    json=$(bench --duration "${seconds}s" --concurrency 1)
    without=$(field "$json" latency_us_p50)
    record idle_effect "1 client, 13 B" "revecho, no idle connections" "$round" \
        "$without" "$(field "$json" errors)"
    taskset -c 1 "$revecho" bench --connect "$server_addr" --json --concurrency 64 \
        --idle 5000 --hold 600s >/dev/null 2>"$work/idle.err" &
    holder_pid=$!
    until grep -q '^holding' "$work/idle.err" || ! kill -0 "$holder_pid" 2>/dev/null; do sleep 0.01; done
    json=$(bench --duration "${seconds}s" --concurrency 1)
    with=$(field "$json" latency_us_p50)
    record idle_effect "1 client, 13 B" "revecho among 5,000 idle connections" "$round" \
        "$with" "$(field "$json" errors)"
    # The same round's two runs share the machine's state: their ratio is
    # steadier than either median.
    record idle_ratio "1 client, 13 B" "among idle ÷ without, same round" "$round" \
        "$(awk -v a="$with" -v b="$without" 'BEGIN { printf "%.3f", a / b }')" 0
    say "  idle effect: p50 $without µs without, $with µs among 5,000 idle connections"
    kill "$holder_pid" 2>/dev/null || true
    wait "$holder_pid" 2>/dev/null || true
    holder_pid=""
    stop_server
}

# callgrind_point LABEL "SERVER COMMAND": user-space instructions per
# connection, as the difference between a 2,500- and a 500-connection run
# (which cancels start-up and shutdown). A second row leaves out memset:
# valgrind counts every iteration of its `rep stosb` as an instruction, so
# zero-filling a buffer weighs far more here than on the CPU.
callgrind_point() {
    local label=$1 command=$2 n total memset previous="" previous_memset=""
    for n in 500 2500; do
        # shellcheck disable=SC2086
        start_server valgrind --tool=callgrind --callgrind-out-file="$work/callgrind.$n" $command
        bench --requests "$n" --concurrency 32 --timeout 60s >/dev/null
        stop_server
        total=$(awk '/^(summary|totals):/ {print $2; exit}' "$work/callgrind.$n")
        [[ -n $total ]] || die "no callgrind totals for $label"
        memset=$(callgrind_annotate --auto=no "$work/callgrind.$n" 2>/dev/null |
            awk '/:__memset|:memset/ { gsub(",", "", $1); sum += $1 } END { print sum + 0 }')
        if [[ -n $previous ]]; then
            record callgrind_ir "13 B burst, 32 clients, lingering close" "$label" 1 \
                "$(awk -v a="$total" -v b="$previous" 'BEGIN { printf "%.0f", (a - b) / 2000 }')" 0
            record callgrind_ir "the same, memset left out" "$label" 1 \
                "$(awk -v a="$((total - memset))" -v b="$((previous - previous_memset))" \
                    'BEGIN { printf "%.0f", (a - b) / 2000 }')" 0
        fi
        previous=$total
        previous_memset=$memset
    done
    say "  callgrind, $label: done"
}

load_start=$(cut -d' ' -f1-3 /proc/loadavg)
started=$(date +%s)
for round in $(seq 1 "$rounds"); do
    say "round $round of $rounds"
    if [[ $only == idle_effect ]]; then
        idle_effect "$round"
        continue
    fi
    for clients in 1 32 256; do
        plural=s
        [[ $clients == 1 ]] && plural=""
        for entry in "${lingering_servers[@]}"; do
            cpu_point "13 B burst, $clients client$plural, lingering close" "${entry%%|*}" "$round" "${entry#*|}" \
                --concurrency "$clients"
        done
        for entry in "${plain_servers[@]}"; do
            cpu_point "13 B burst, $clients client$plural, plain close" "${entry%%|*}" "$round" "${entry#*|}" \
                --concurrency "$clients"
        done
    done
    for size_clients in "64KiB 32" "1MiB 8"; do
        read -r size clients <<<"$size_clients"
        for entry in "${eof_servers[@]}"; do
            cpu_point "$size eof, $clients clients" "${entry%%|*}" "$round" "${entry#*|}" \
                --framing eof --payload "$size" --concurrency "$clients"
        done
    done
    for entry in "${idle_servers[@]}"; do
        idle_point "${entry%%|*}" "$round" "${entry#*|}"
    done
    idle_effect "$round"
done
if [[ $callgrind == 1 && -z $only ]]; then
    callgrind_point "revecho" "$revecho -q --listen 127.0.0.1:0"
    callgrind_point "C epoll" "$c_peer --linger"
fi
load_end=$(cut -d' ' -f1-3 /proc/loadavg)

chart="$work/benchmarks.svg"
[[ $write_docs == 1 ]] && chart="$root/docs/benchmarks.svg"
tables=$("$report" "$results" "$chart")
cpu_model=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)
section="$work/section.md"
{
    echo "Generated by \`${only:+COMPARE_ONLY=$only }COMPARE_SECONDS=$seconds COMPARE_ROUNDS=$rounds benches/compare.sh\` on $(date -u '+%Y-%m-%d %H:%M UTC'),"
    echo "in $(( $(date +%s) - started )) s: $(nproc) CPUs ($cpu_model), load average $load_start at the start"
    echo "and $load_end at the end. Medians over the rounds; \"× revecho\" is the"
    echo "median's ratio to revecho's at the same point (lower is cheaper)."
    echo "$tables"
    echo
    echo "![Server CPU per connection relative to revecho](benchmarks.svg)"
} >"$section"
cat "$section"
if [[ $write_docs == 1 ]]; then
    python3 - "$root/docs/benchmarks.md" "$section" <<'PYTHON'
import sys
page_path, section_path = sys.argv[1], sys.argv[2]
page = open(page_path).read()
begin, end = "<!-- compare.sh:begin -->", "<!-- compare.sh:end -->"
if begin not in page or end not in page:
    sys.exit(f"{page_path} has no {begin} ... {end} section")
head, rest = page.split(begin, 1)
_, tail = rest.split(end, 1)
section = open(section_path).read().strip()
open(page_path, "w").write(f"{head}{begin}\n{section}\n{end}{tail}")
PYTHON
    say "wrote docs/benchmarks.md (marked section) and docs/benchmarks.svg"
fi
