#!/usr/bin/env bash
# Reproduces the queue figures of issue 4 ("Speed") on this machine:
# (q) 1 publisher -> 4 `recv --follow` workers with ack on one queue, msgs/s end to end, and a
#     check that every message was delivered exactly once;
# (f) fan-out of one topic to 0, 1 and 8 queues: publish msgs/s and disk bytes per message
#     (the payload is stored once, however many queues match), then draining one of the 8 and
#     checking after a restart that the drained queue stays empty and the others full.
# Floors (issue 4): (q) >= 100,000 msgs/s end to end; (f) publish to 8 queues >= 50% of the
# publish to 1 queue.
#
#   bench/queues.sh [BIN_DIR]     # BIN_DIR holds momd and momctl; default target/release
#
# Build first: cargo build --release -p momd -p momctl
# Env: MOM_BENCH_FSYNC (default always), MOM_BENCH_N (messages, default 1000000),
# MOM_BENCH_ROUNDS (fan-out rounds, default 1; round 2 runs 8,1,0 to even out drift),
# MOM_BENCH_TMP (parent of the temp dirs, default $TMPDIR or /tmp), MOM_BENCH_TIMEOUT.
#
# The request/reply round trip (p50/p99, sequential) is not measured here: `momctl request`
# starts a process per call, which measures process start. It needs a small client program
# (one connection watching svc.echo and publishing each payload to its reply-to topic with the
# same correlation-id; one connection watching a single inbox $inbox.bench.1 and sending 2,000
# requests one after the other, timing each until the reply with its correlation-id arrives),
# built against crates/momctl (momctl::client) outside this workspace.
#
# Everything runs on 127.0.0.1 in temp dirs that are removed on exit; momd and the workers are
# stopped by their own PIDs. Each step is bounded by `timeout`. Figures on a shared 2-core
# machine are noisy: run twice, compare ratios measured side by side.
set -u -o pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
bin=${1:-$here/target/release}
MOMD=$bin/momd
MOMCTL=$bin/momctl
FSYNC=${MOM_BENCH_FSYNC:-always}
N=${MOM_BENCH_N:-1000000}
ROUNDS=${MOM_BENCH_ROUNDS:-1}
WORKERS=4
FAN=8
T=${MOM_BENCH_TIMEOUT:-300}      # seconds allowed to any one step

for b in "$MOMD" "$MOMCTL"; do
    [ -x "$b" ] || { echo "missing $b: cargo build --release -p momd -p momctl" >&2; exit 2; }
done

work=$(mktemp -d "${MOM_BENCH_TMP:-${TMPDIR:-/tmp}}/mom-queues.XXXXXX")
pid=""
wpids=()
stop_workers() {
    local p
    for p in "${wpids[@]}"; do kill -TERM "$p" 2>/dev/null; done
    for p in "${wpids[@]}"; do wait "$p" 2>/dev/null; done
    wpids=()
}
cleanup() {
    stop_workers
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null
        for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null
    fi
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }
rate() { awk -v n="$1" -v s="$2" 'BEGIN { printf "%.0f", n / s }'; }
pct() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.0f%%", 100 * a / b }'; }
say() { printf '%s\n' "$*"; }
cmd() { printf '  $ %s\n' "$*"; }
die() { say "FAILED: $*"; [ -n "${log:-}" ] && [ -f "$log" ] && tail -20 "$log"; exit 1; }

# start_momd DIR: starts momd on a port of its choosing, sets pid, addr, log; waits for a ping.
start_momd() {
    local dir=$1 up=""
    log=$work/momd.$(basename "$dir").log
    [ -f "$log" ] && log=$log.2
    addr=""
    "$MOMD" --listen 127.0.0.1:0 --data "$dir" --fsync "$FSYNC" 2>"$log" &
    pid=$!
    for _ in $(seq 1 $((T * 100))); do
        addr=$(sed -n 's/.*listening on \(127\.0\.0\.1:[0-9]*\).*/\1/p' "$log" | head -1)
        [ -n "$addr" ] && break
        kill -0 "$pid" 2>/dev/null || die "momd exited at start"
        sleep 0.01
    done
    [ -n "$addr" ] || die "momd did not listen within ${T}s"
    for _ in $(seq 1 $((T * 100))); do
        if "$MOMCTL" -s "$addr" ping >/dev/null 2>&1; then up=1; break; fi
        kill -0 "$pid" 2>/dev/null || die "momd exited at start"
        sleep 0.01
    done
    [ -n "$up" ] || die "momd did not answer a ping within ${T}s"
    [ "$(cat "$dir/momd.lock")" = "$pid" ] || die "momd.lock does not hold PID $pid"
}

stop_momd() {
    kill -TERM "$pid"
    for _ in $(seq 1 $((T * 10))); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && die "momd did not stop within ${T}s of SIGTERM"
    wait "$pid"
    local rc=$?
    [ "$rc" = 0 ] || die "momd exited $rc on SIGTERM"
    pid=""
}

qfield() {  # qfield QUEUE FIELD -> number from queue info --json
    "$MOMCTL" -s "$addr" queue info "$1" --json | sed -n "s/.*\"$2\":\([0-9]*\).*/\1/p"
}

qline() {  # qline QUEUE -> the counters of queue info --json that matter here
    "$MOMCTL" -s "$addr" queue info "$1" --json |
        grep -o '"\(consumers\|ready\|unacked\|delivered\|acked\|redelivered\|dead_lettered\|dropped\)":[0-9]*' |
        tr '\n' ' '
}

topic_msgs() {  # topic_msgs TOPIC -> stored message count from stats --json
    "$MOMCTL" -s "$addr" stats --json | tr '{' '\n' | grep "\"name\":\"$1\"" |
        sed -n 's/.*"messages":\([0-9]*\).*/\1/p'
}

say "# mom queue benchmark $(date -u +%Y-%m-%dT%H:%M:%SZ)"
say "momd: $("$MOMD" --version)  ($MOMD)"
say "binaries built $(date -u -r "$MOMD" +%Y-%m-%dT%H:%M:%SZ); repo now at $(git -C "$here" rev-parse --short HEAD 2>/dev/null || echo '?')"
say "machine: $(nproc) cores, $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), load $(cut -d' ' -f1-3 /proc/loadavg)"
say "fsync: $FSYNC; $N messages (seq 1 $N: 1-7 ASCII digits); data in $work"
say

# ---------------------------------------------------------------- (q) queue with 4 workers
dir=$work/q
start_momd "$dir"
say "## (q) 1 publisher -> $WORKERS recv --follow workers with ack, one queue (momd on $addr, PID $pid)"
cmd "$MOMD --listen 127.0.0.1:0 --data $dir --fsync $FSYNC"
cmd "$MOMCTL -s $addr queue create jobs --bind 'jobs.>'"
"$MOMCTL" -s "$addr" queue create jobs --bind 'jobs.>' >/dev/null || die "queue create jobs"
cmd "for i in 1..$WORKERS: $MOMCTL -s $addr recv jobs --follow > w\$i.txt &"
for i in $(seq 1 $WORKERS); do
    "$MOMCTL" -s "$addr" recv jobs --follow >"$work/w$i.txt" 2>"$work/w$i.err" &
    wpids+=($!)
done
for _ in $(seq 1 $((T * 10))); do
    [ "$(qfield jobs consumers)" = "$WORKERS" ] && break
    sleep 0.1
done
[ "$(qfield jobs consumers)" = "$WORKERS" ] || die "the $WORKERS workers did not attach"
cmd "seq 1 $N | $MOMCTL -s $addr publish jobs.a -q; poll queue info jobs --json until acked = $N"
t0=$(now)
timeout "$T" bash -c "seq 1 $N | '$MOMCTL' -s $addr publish jobs.a -q" || die "publish exited $?"
t1=$(now)
acked=0
for _ in $(seq 1 $((T * 50))); do
    acked=$(qfield jobs acked)
    [ "$acked" = "$N" ] && break
    for p in "${wpids[@]}"; do kill -0 "$p" 2>/dev/null || die "worker $p died: $(cat "$work"/w*.err)"; done
    sleep 0.02
done
t2=$(now)
[ "$acked" = "$N" ] || die "acked = $acked after ${T}s, expected $N ($(qline jobs))"
s1=$(secs "$t0" "$t1")
s2=$(secs "$t0" "$t2")
say "  publish returned after ${s1} s = $(rate "$N" "$s1") msgs/s"
say "  all $N acked after ${s2} s = $(rate "$N" "$s2") msgs/s end to end   (floor 100000: $(pct "$(rate "$N" "$s2")" 100000))"
sleep 0.5
say "  queue info: $(qline jobs)"
stop_workers
lines=""
total=0
for i in $(seq 1 $WORKERS); do
    c=$(wc -l <"$work/w$i.txt")
    lines="$lines w$i=$c"
    total=$((total + c))
done
say "  worker lines:$lines, sum $total"
dups=$(cat "$work"/w*.txt | sort | uniq -d | wc -l)
distinct=$(cat "$work"/w*.txt | sort -u | wc -l)
missing=$(comm -23 <(seq 1 "$N" | sort) <(cat "$work"/w*.txt | sort -u) | wc -l)
say "  duplicates (sort | uniq -d): $dups; distinct: $distinct; missing from 1..$N: $missing"
if [ "$total" = "$N" ] && [ "$dups" = 0 ] && [ "$missing" = 0 ]; then
    say "  OK: every message delivered exactly once"
else
    say "  BUG: expected $N lines, each of 1..$N once"
fi
[ -s "$work/w1.err" ] && say "  worker stderr: $(cat "$work"/w*.err | sort | uniq -c | head -5)"
stop_momd
rm -rf "$dir" "$work"/w*.txt
say

# ---------------------------------------------------------------- (f) fan-out
# fan K ROUND: a fresh momd, K queues bound to fan.t, publish N, report msgs/s and disk.
declare -A pubrate
fan() {
    local k=$1 r=$2 b0 b1 s t0 t1 got q
    dir=$work/f$k.$r
    start_momd "$dir"
    for q in $(seq 1 "$k"); do
        "$MOMCTL" -s "$addr" queue create "fan$q" --bind fan.t >/dev/null || die "queue create fan$q"
    done
    b0=$(du -sb "$dir" | cut -f1)
    t0=$(now)
    timeout "$T" bash -c "seq 1 $N | '$MOMCTL' -s $addr publish fan.t -q" 2>"$work/pub.err" ||
        die "publish exited $? ($(cat "$work/pub.err"))"
    t1=$(now)
    s=$(secs "$t0" "$t1")
    got=$(topic_msgs fan.t)
    [ "$got" = "$N" ] || die "fan.t holds $got messages, expected $N"
    for q in $(seq 1 "$k"); do
        got=$(qfield "fan$q" ready)
        [ "$got" = "$N" ] || die "fan$q has ready = $got, expected $N"
    done
    b1=$(du -sb "$dir" | cut -f1)
    pubrate[$k.$r]=$(rate "$N" "$s")
    say "  queues $k: publish $N in ${s} s = ${pubrate[$k.$r]} msgs/s;" \
        "data dir $b0 -> $b1 bytes (du -sb) = $(awk -v a="$b0" -v b="$b1" -v n="$N" 'BEGIN { printf "%.1f", (b - a) / n }') bytes/msg" \
        "($(awk -v b="$b1" -v n="$N" 'BEGIN { printf "%.1f", b / n }') with the empty dir)"
}

say "## (f) fan-out: one topic fan.t, 0 / 1 / $FAN queues bound to it, a fresh momd each"
cmd "$MOMD --listen 127.0.0.1:0 --data DIR --fsync $FSYNC"
cmd "for q in 1..K: $MOMCTL queue create fan\$q --bind fan.t"
cmd "seq 1 $N | $MOMCTL publish fan.t -q; du -sb DIR (before and after)"
drain() {  # drain QUEUE: on the momd that still holds it
    local t0 t1 s
    say "  drain one of the $FAN queues (same momd, $addr):"
    cmd "$MOMCTL -s $addr recv $1 -n $N > /dev/null"
    t0=$(now)
    timeout "$T" "$MOMCTL" -s "$addr" recv "$1" -n "$N" >/dev/null 2>"$work/recv.err" ||
        die "recv exited $? ($(cat "$work/recv.err"))"
    t1=$(now)
    s=$(secs "$t0" "$t1")
    say "  drain: $N msgs in ${s} s = $(rate "$N" "$s") msgs/s"
    say "  queue info $1: $(qline "$1")"
    say "  queue info fan2: $(qline fan2)"
    # The queues' state survives a restart: the drained one stays empty, the others full.
    stop_momd
    start_momd "$dir"
    say "  after SIGTERM and restart: momd says $(grep -o 'recovered in [^ ]*' "$log" | tail -1);" \
        "ready $1=$(qfield "$1" ready) fan2=$(qfield fan2 ready) fan$FAN=$(qfield "fan$FAN" ready)"
    [ "$(qfield "$1" ready)" = 0 ] && [ "$(qfield fan2 ready)" = "$N" ] ||
        say "  BUG: expected ready $1=0 and fan2=$N after the restart"
}

for r in $(seq 1 "$ROUNDS"); do
    if [ $((r % 2)) = 1 ]; then order="0 1 $FAN"; else order="$FAN 1 0"; fi
    say " round $r:"
    for k in $order; do
        fan "$k" "$r"
        [ "$k" = "$FAN" ] && [ "$r" = 1 ] && drain fan1
        stop_momd
        rm -rf "$dir"
    done
done
for r in $(seq 1 "$ROUNDS"); do
    say "  round $r: $FAN queues = $(pct "${pubrate[$FAN.$r]}" "${pubrate[1.$r]}") of 1 queue (floor 50%)," \
        "1 queue = $(pct "${pubrate[1.$r]}" "${pubrate[0.$r]}") of 0 queues"
done
say
say "done"
