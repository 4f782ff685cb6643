#!/usr/bin/env bash
# The soak (issue 11): one revecho server, a million connections, and its
# memory and descriptors sampled every second to show they stay flat.
#
#   scripts/soak.sh                     1,000,000 connections from `revecho bench`
#   scripts/soak.sh --faulty            the same, plus a pool of faulty clients
#                                       (examples/faulty_clients.rs) making 10%
#                                       of all connections, on a second listener,
#                                       in ten rounds that spread them over the run
#   scripts/soak.sh --stand-in 3000     a loop of `revecho send` instead of the
#                                       bench: tries the sampling and the report
#   scripts/soak.sh --report-only DIR   redraws DIR's report from its samples
#
# Options: --requests N (1000000), --concurrency N (64, the bench's),
# --faulty-concurrency N (384 threads of the faulty pool), --out DIR
# (target/soak/DATE[-faulty]), --no-build.
#
# It builds in release, starts `revecho` on a free loopback port, samples
# VmRSS (/proc/PID/status) and the open descriptors (/proc/PID/fd) into
# DIR/samples.csv every second, runs the load, lets the server go idle, stops
# it with SIGTERM and keeps its summary line. The report (DIR/report.md, also
# printed) compares the mean RSS of the last tenth of the load with that of
# the second tenth (the first tenth is warm-up: the allocator and the
# connection slab grow to their working size) and draws DIR/soak.svg.
#
# Exit status 0 only if the load had zero errors (and, with --faulty, zero
# wrong replies to the faulty pool's checked clients), RSS stayed within 2%,
# the descriptor count came back to where it started, and the endings in the
# server's summary add up to `accepted`. The report also gives the machine's
# load average under load (sampled with RSS): the figures depend on it.
#
# A million connections on loopback need net.ipv4.tcp_tw_reuse: each closed
# connection holds its port in TIME_WAIT for 60 s, and there are only about
# 28,000 ephemeral ports. The script checks it, and sets it when run as root.
set -euo pipefail
cd "$(dirname "$0")/.."

requests=1000000
concurrency=64
faulty_concurrency=384
faulty=0
stand_in=0
out=""
build=1
report_only=""
# The server: line framing (where dripping and early half-closes are real
# faults), a small message limit so oversize clients cost little, and short
# timeouts so faulty clients do not hold slots for long.
max_message=64KiB
server_flags=(--framing line --max-message "$max_message" --idle-timeout 2s --linger 500ms)

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
while (($#)); do
    case $1 in
        --requests) requests=$2; shift 2 ;;
        --concurrency) concurrency=$2; shift 2 ;;
        --faulty) faulty=1; shift ;;
        --faulty-concurrency) faulty_concurrency=$2; shift 2 ;;
        --stand-in) stand_in=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        --no-build) build=0; shift ;;
        --report-only) report_only=$2; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "soak: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done

# ---------------------------------------------------------------------------
# The report: summary figures, pass/fail on RSS and descriptors, and an SVG
# chart with no dependency beyond python3.
# ---------------------------------------------------------------------------
report() {
    python3 - "$1" <<'PY'
import csv, json, os, sys

out = sys.argv[1]
meta = {}
with open(os.path.join(out, "meta.txt")) as f:
    for line in f:
        key, _, value = line.strip().partition("=")
        meta[key] = value
rows = []
with open(os.path.join(out, "samples.csv")) as f:
    for row in csv.DictReader(f):
        # load1: the machine's 1-minute load average (absent in older runs).
        rows.append((float(row["epoch"]), int(row["rss_kib"]), int(row["fds"]),
                     float(row.get("load1") or "nan")))
if not rows:
    sys.exit("soak: no samples")
t0 = rows[0][0]
load_start, load_end = float(meta["load_start"]), float(meta["load_end"])
load = [r for r in rows if load_start <= r[0] <= load_end]
lines, ok = [], True

def say(text=""):
    lines.append(text)

say(f"# soak {meta.get('mode', '?')}: {os.path.basename(os.path.abspath(out))}")
say()
say(f"- load: {meta.get('load', '?')}")
say(f"- load duration: {load_end - load_start:.1f} s, {len(load)} samples of {len(rows)}")
load_ok = meta.get("load_ok") == "1"
say(f"- load result: {meta.get('load_result', '?')} -> {'ok' if load_ok else 'FAILED'}")
ok &= load_ok
if "faulty_result" in meta:
    faulty_ok = meta.get("faulty_ok") == "1"
    say(f"- faulty pool: {meta['faulty_result']} -> {'ok' if faulty_ok else 'FAILED'}")
    numbers = {}
    for text in (meta["faulty_result"], meta.get("load_result", "")):
        for word in text.split():
            key, _, value = word.partition("=")
            if value.replace(".", "").isdigit():
                numbers.setdefault(key, float(value))
    if numbers.get("connections") and numbers.get("completed") is not None:
        share = numbers["connections"] / (numbers["connections"] + numbers["completed"]) * 100
        say(f"- faulty share of all connections: {share:.1f}% (the aim is 10%)")
    ok &= faulty_ok
if len(load) >= 20:
    tenth = len(load) // 10
    second = load[tenth:2 * tenth]
    last = load[-tenth:]
    mean = lambda xs: sum(r[1] for r in xs) / len(xs)
    rss_second, rss_last = mean(second), mean(last)
    change = (rss_last - rss_second) / rss_second * 100
    flat = abs(change) <= 2.0
    ok &= flat
    say(f"- RSS, mean of the second tenth: {rss_second / 1024:.1f} MiB; of the last tenth: "
        f"{rss_last / 1024:.1f} MiB; change {change:+.2f}% -> {'flat (within 2%)' if flat else 'NOT FLAT'}")
else:
    tenth = 0
    say(f"- RSS: only {len(load)} samples under load; 20 or more (seconds) are needed to compare tenths")
say(f"- RSS at the start of the load: {load[0][1] / 1024 if load else float('nan'):.1f} MiB; "
    f"peak over the run: {max(r[1] for r in rows) / 1024:.1f} MiB")
if load:
    say(f"- descriptors under load: min {min(r[2] for r in load)}, max {max(r[2] for r in load)}")
loads = [r[3] for r in load if r[3] == r[3]]
if loads:
    say(f"- machine load average (1 min) under load: min {min(loads):.2f}, "
        f"mean {sum(loads) / len(loads):.2f}, max {max(loads):.2f} (2 cores, shared)")
fds_before, fds_after = int(meta["fds_before"]), int(meta["fds_after"])
fds_back = 0 <= fds_after <= fds_before
ok &= fds_back
if fds_after < 0:
    say("- the server was gone before the end of the run: see server.log")
say(f"- descriptors: {fds_before} before the load, peak {max(r[2] for r in rows)}, "
    f"{fds_after} once idle -> {'back to the start' if fds_back else 'LEAKED' if fds_after >= 0 else 'GONE'}")
summary = meta.get("summary", "")
say(f"- server summary: {summary or '(none)'}")
# Every accepted connection ends in exactly one counted way.
counters = {k: int(v) for k, _, v in (w.partition("=") for w in summary.split()) if v.isdigit()}
endings = ("completed", "oversize", "idle_timeout", "read_timeout", "reset", "io_error",
           "linger_timeout", "shutdown_cut_off")
if "accepted" in counters and all(k in counters for k in endings):
    ended = sum(counters[k] for k in endings)
    adds_up = ended == counters["accepted"]
    ok &= adds_up
    say(f"- endings: {' + '.join(f'{k} {counters[k]}' for k in endings if counters[k])} = {ended}; "
        f"accepted {counters['accepted']} -> {'add up' if adds_up else 'DO NOT ADD UP'}")
else:
    ok = False
    say("- endings: no summary line to check")
say(f"- verdict: {'PASS' if ok else 'FAIL'}")
say()
say("![RSS and descriptors over the run](soak.svg)")

# The chart: RSS (MiB, left axis) and descriptors (right axis) over time,
# with the two tenths that are compared shaded.
W, H, L, R, T, B = 800, 320, 70, 70, 40, 45
span = max(rows[-1][0] - t0, 1.0)
rss_top = max(r[1] for r in rows) / 1024 * 1.1 or 1.0
fd_top = max(r[2] for r in rows) * 1.1 or 1.0
x = lambda t: L + (t - t0) / span * (W - L - R)
y_rss = lambda kib: T + (1 - kib / 1024 / rss_top) * (H - T - B)
y_fd = lambda n: T + (1 - n / fd_top) * (H - T - B)
svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
       f'<rect width="{W}" height="{H}" fill="white"/>']
if tenth:
    for band, label in ((second, "second tenth"), (last, "last tenth")):
        x0, x1 = x(band[0][0]), x(band[-1][0])
        svg.append(f'<rect x="{x0:.1f}" y="{T}" width="{max(x1 - x0, 1):.1f}" height="{H - T - B}" fill="#eee"/>')
        svg.append(f'<text x="{(x0 + x1) / 2:.1f}" y="{T + 14}" text-anchor="middle" fill="#777">{label}</text>')
svg.append(f'<line x1="{x(load_start):.1f}" y1="{T}" x2="{x(load_start):.1f}" y2="{H - B}" stroke="#bbb" stroke-dasharray="4"/>')
svg.append(f'<line x1="{x(load_end):.1f}" y1="{T}" x2="{x(load_end):.1f}" y2="{H - B}" stroke="#bbb" stroke-dasharray="4"/>')
svg.append(f'<rect x="{L}" y="{T}" width="{W - L - R}" height="{H - T - B}" fill="none" stroke="#333"/>')
for i in range(5):
    frac = i / 4
    yy = T + (1 - frac) * (H - T - B)
    svg.append(f'<text x="{L - 6}" y="{yy + 4:.1f}" text-anchor="end" fill="#1f77b4">{rss_top * frac:.{1 if rss_top < 20 else 0}f}</text>')
    svg.append(f'<text x="{W - R + 6}" y="{yy + 4:.1f}" fill="#d62728">{fd_top * frac:.0f}</text>')
    svg.append(f'<text x="{L + frac * (W - L - R):.1f}" y="{H - B + 16}" text-anchor="middle">{span * frac:.0f}</text>')
svg.append(f'<text x="{W / 2}" y="{H - 8}" text-anchor="middle">seconds</text>')
svg.append(f'<text x="14" y="{T + (H - T - B) / 2}" fill="#1f77b4" transform="rotate(-90 14 {T + (H - T - B) / 2})" text-anchor="middle">RSS (MiB)</text>')
svg.append(f'<text x="{W - 14}" y="{T + (H - T - B) / 2}" fill="#d62728" transform="rotate(90 {W - 14} {T + (H - T - B) / 2})" text-anchor="middle">open descriptors</text>')
svg.append(f'<text x="{L}" y="24" font-size="14">revecho soak ({meta.get("mode", "?")}): RSS and descriptors, sampled every second</text>')
for series, colour in (([(x(r[0]), y_rss(r[1])) for r in rows], "#1f77b4"), ([(x(r[0]), y_fd(r[2])) for r in rows], "#d62728")):
    points = " ".join(f"{px:.1f},{py:.1f}" for px, py in series)
    svg.append(f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="1.5"/>')
svg.append("</svg>")
with open(os.path.join(out, "soak.svg"), "w") as f:
    f.write("\n".join(svg) + "\n")
with open(os.path.join(out, "report.md"), "w") as f:
    f.write("\n".join(lines) + "\n")
print("\n".join(lines[:-2]))
print(f"chart: {os.path.join(out, 'soak.svg')}")
sys.exit(0 if ok else 1)
PY
}

if [[ -n $report_only ]]; then
    report "$report_only"
    exit
fi

# ---------------------------------------------------------------------------
# Preconditions
# ---------------------------------------------------------------------------
tw_reuse=$(cat /proc/sys/net/ipv4/tcp_tw_reuse 2>/dev/null || echo unknown)
case $tw_reuse in
    1|2) echo "soak: net.ipv4.tcp_tw_reuse=$tw_reuse (1: on, 2: on for loopback): ok" ;;
    *)
        if ((EUID == 0)); then
            echo "soak: net.ipv4.tcp_tw_reuse=$tw_reuse; enabling it (running as root)"
            sysctl -w net.ipv4.tcp_tw_reuse=1 >/dev/null
        elif ((stand_in)); then
            echo "soak: warning: net.ipv4.tcp_tw_reuse=$tw_reuse; fine for a short stand-in run"
        else
            echo "soak: net.ipv4.tcp_tw_reuse=$tw_reuse: this many loopback connections will run out of" >&2
            echo "soak: ephemeral ports (each closed one waits 60 s in TIME_WAIT). Enable it with" >&2
            echo "soak:     sudo sysctl -w net.ipv4.tcp_tw_reuse=1" >&2
            exit 2
        fi
        ;;
esac

mode=$( ((stand_in)) && echo "stand-in" || echo "bench")
((faulty)) && mode+=" + faulty pool"
out=${out:-target/soak/$(date +%Y%m%d-%H%M%S)$( ((faulty)) && echo -faulty)}
mkdir -p "$out"
echo "soak: mode $mode, writing to $out"

if ((build)); then
    cargo build --release --quiet --bin revecho --example faulty_clients
fi
# SOAK_REVECHO: another binary to run (say, a build with `revecho bench`).
revecho=${SOAK_REVECHO:-target/release/revecho}
faulty_driver=target/release/examples/faulty_clients

# The faulty pool holds a socket per thread: lift the soft descriptor limit
# to the hard one (the server raises its own).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# Processes this script started, stopped on any exit (by PID only).
server_pid="" sampler_pid="" faulty_pid=""
cleanup() {
    for pid in $faulty_pid $sampler_pid $server_pid; do
        kill "$pid" 2>/dev/null || true
    done
}
trap cleanup EXIT

# ---------------------------------------------------------------------------
# The server, on one free port (two with --faulty: the faulty pool gets its
# own listener, so it never queues in front of the bench's clients).
# ---------------------------------------------------------------------------
listen=(--listen 127.0.0.1:0)
((faulty)) && listen+=(--listen 127.0.0.1:0)
"$revecho" "${listen[@]}" "${server_flags[@]}" >"$out/server.stdout" 2>"$out/server.log" &
server_pid=$!
listeners=$( ((faulty)) && echo 2 || echo 1)
for _ in $(seq 100); do
    (($(grep -c '^listening on ' "$out/server.stdout" || true) >= listeners)) && break
    kill -0 "$server_pid" 2>/dev/null || { cat "$out/server.log" >&2; exit 1; }
    sleep 0.1
done
mapfile -t addrs < <(sed -n 's/^listening on //p' "$out/server.stdout")
((${#addrs[@]} >= listeners)) || { echo "soak: the server did not start" >&2; exit 1; }
echo "soak: server $server_pid on ${addrs[*]}: revecho ${listen[*]} ${server_flags[*]}"

# ---------------------------------------------------------------------------
# The sampler: one line per second while the server runs.
# ---------------------------------------------------------------------------
# -1 once the server is gone (so that a dead server never looks like one
# that gave all its descriptors back).
fd_count() {
    if [[ -d /proc/$server_pid/fd ]]; then
        { find "/proc/$server_pid/fd" -mindepth 1 -maxdepth 1 2>/dev/null || true; } | wc -l
    else
        echo -1
    fi
}
(
    echo "epoch,rss_kib,fds,load1"
    while [[ -r /proc/$server_pid/status ]]; do
        rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$server_pid/status" 2>/dev/null) || break
        read -r load1 _ </proc/loadavg
        echo "$(date +%s.%N),${rss:-0},$(fd_count),$load1"
        sleep 1
    done
) >"$out/samples.csv" &
sampler_pid=$!

# A few quiet samples before the load.
sleep 3
{
    echo "mode=$mode"
    echo "fds_before=$(fd_count)"
    echo "load_start=$(date +%s.%N)"
} >"$out/meta.txt"

# ---------------------------------------------------------------------------
# The load
# ---------------------------------------------------------------------------
# With --faulty, the run is ten rounds, each a tenth of the bench's
# connections beside a tenth of the faulty pool's (one faulty connection for
# every nine of the bench: 10% of the total). Started together once, the
# pool would be done in the first half minute and the rest of the run would
# be the plain soak again; in rounds, the faults span the whole run whatever
# the speed of the machine, and every tenth of it carries the same load.
# A round ends when both are done.
rounds=$( ((faulty && !stand_in)) && echo 10 || echo 1)
total=$( ((stand_in)) && echo "$stand_in" || echo "$requests")
faulty_total=$((total / 9))

# The `revecho bench` JSON of every round, summed: `errors` is the bench's
# total, and the errors_* fields break it down by kind (refused, reset,
# wrong_reply, timeout, other), so they are shown, not added to it again.
bench_result() {
    python3 - "$@" <<'PY'
import json, sys
runs = []
for path in sys.argv[1:]:
    try:
        runs.append(json.load(open(path)))
    except Exception as e:
        print(f"no JSON from the bench in {path} ({e})"); sys.exit()
completed = sum(r["completed"] for r in runs)
elapsed = sum(r["elapsed_s"] for r in runs)
kinds = {}
for r in runs:
    for k in sorted(r):
        if k.startswith("errors_"):
            kinds[k] = kinds.get(k, 0) + r[k]
errors = sum(r.get("errors", 0) for r in runs)
p99 = max(r["latency_us_p99"] for r in runs)
p99_name = "latency_us_p99" if len(runs) == 1 else "latency_us_p99_worst_round"
print(f"completed={completed} elapsed_s={elapsed:.1f} connections_per_s={completed / elapsed:.1f} "
      f"{p99_name}={p99} errors={errors:g}", " ".join(f"{k}={v}" for k, v in kinds.items() if v))
PY
}

# The faulty pool's `key=value` lines of every round, summed.
faulty_sum() {
    python3 - "$@" <<'PY'
import sys
totals = {}
for path in sys.argv[1:]:
    words = open(path).read().split()
    for word in words[1:]:
        key, _, value = word.partition("=")
        totals[key] = totals.get(key, 0) + float(value)
print("faulty: " + " ".join(f"{k}={v:g}" if k != "seconds" else f"{k}={v:.1f}" for k, v in totals.items()))
PY
}

load_ok=0 faulty_ok=1 bench_files=() faulty_files=() bench_status=0
for ((round = 1; round <= rounds; round++)); do
    # This round's share; the last round takes the remainders.
    bench_count=$((total / rounds)) faulty_count=$((faulty_total / rounds))
    if ((round == rounds)); then
        bench_count=$((total - (rounds - 1) * (total / rounds)))
        faulty_count=$((faulty_total - (rounds - 1) * (faulty_total / rounds)))
    fi
    ((rounds > 1)) && echo "soak: round $round of $rounds: $bench_count bench connections, $faulty_count faulty"
    if ((faulty)); then
        faulty_files+=("$out/faulty.$round.txt")
        "$faulty_driver" --connect "${addrs[1]}" --connections "$faulty_count" \
            --concurrency "$faulty_concurrency" --max-message "$max_message" --hold 100ms --timeout 10s \
            >"$out/faulty.$round.txt" 2>>"$out/faulty.log" &
        faulty_pid=$!
    fi
    if ((stand_in)); then
        load="$stand_in sequential \`revecho send\` exchanges (stand-in for the bench)"
        errors=0
        for ((i = 0; i < stand_in; i++)); do
            message="soak $i"
            reply=$("$revecho" send --connect "${addrs[0]}" --timeout 10s "$message"$'\n' 2>>"$out/load.log") || true
            [[ $reply == "$(rev <<<"$message")" ]] || errors=$((errors + 1))
        done
        load_result="completed=$((stand_in - errors)) errors=$errors"
        ((errors == 0)) && load_ok=1
    else
        bench_files+=("$out/bench.$round.json")
        "$revecho" bench --connect "${addrs[0]}" --requests "$bench_count" --concurrency "$concurrency" \
            --payload 64 --framing line --timeout 10s --json >"$out/bench.$round.json" 2>>"$out/load.log" ||
            bench_status=$?
    fi
    if ((faulty)); then
        status=0
        wait "$faulty_pid" || status=$?
        faulty_pid=""
        ((status == 0)) || faulty_ok=0
    fi
done
if ((!stand_in)); then
    load="revecho bench --requests $requests --concurrency $concurrency --payload 64 --framing line"
    ((rounds > 1)) && load+=" (in $rounds rounds of $((requests / rounds)))"
    load_result="$(bench_result "${bench_files[@]}") exit=$bench_status"
    # Pass only on the bench's own verdict (exit 0 in every round: no error
    # of any kind) and on every requested connection completed.
    [[ $bench_status == 0 && $load_result == "completed=$requests "* && $load_result == *" errors=0 "* ]] &&
        load_ok=1
fi
load_end=$(date +%s.%N)
if ((faulty)); then
    faulty_result="$(faulty_sum "${faulty_files[@]}") exit=$( ((faulty_ok)) && echo 0 || echo 1)"
fi

# Idle: lingering and timed-out connections close, descriptors come back.
sleep 5
fds_after=$(fd_count)
# A server that died under load is a failure the report must still show.
kill -TERM "$server_pid" 2>/dev/null || echo "soak: the server had already exited (see $out/server.log)" >&2
wait "$server_pid" || true
server_pid=""
wait "$sampler_pid" 2>/dev/null || true
sampler_pid=""
summary=$(sed -n 's/.*summary: //p' "$out/server.log" | tail -1)

{
    echo "load_end=$load_end"
    echo "load=$load"
    echo "load_result=$load_result"
    echo "load_ok=$load_ok"
    echo "fds_after=$fds_after"
    echo "summary=$summary"
    if ((faulty)); then
        echo "faulty_result=$faulty_result"
        echo "faulty_ok=$faulty_ok"
    fi
} >>"$out/meta.txt"

report "$out"
