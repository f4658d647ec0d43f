#!/usr/bin/env bash
# Reproduces mom's throughput, memory, restart and disk figures on this machine:
# (a) publish 1M from a pipe, (b) replay 1M, (c) 16 concurrent publishers, (g) one message per
# publish request, (d) RSS, (e) restart time with 1M and 10M stored, (f) disk bytes/message.
#
#   bench/run.sh [BIN_DIR]        # BIN_DIR holds momd and momctl; default target/release
#
# Build first: cargo build --release -p momd -p momctl
# Env: MOM_BENCH_FSYNC (default always), MOM_BENCH_BIG (messages for the big restart,
# default 10000000; 0 skips it), MOM_BENCH_TMP (parent of the temp dirs, default $TMPDIR or /tmp).
#
# Everything runs on 127.0.0.1 in temp dirs that are removed on exit; momd is stopped by its
# own PID. Each step is bounded by `timeout`. Figures on a shared 2-core machine are noisy:
# run twice, compare ratios measured side by side.
set -u -o pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
bin=${1:-$here/target/release}
MOMD=$bin/momd
MOMCTL=$bin/momctl
FSYNC=${MOM_BENCH_FSYNC:-always}
BIG=${MOM_BENCH_BIG:-10000000}
N=1000000
PAR=16
T=${MOM_BENCH_TIMEOUT:-300}      # seconds allowed to any one step

for b in "$MOMD" "$MOMCTL"; do
    [ -x "$b" ] || { echo "missing $b: cargo build --release -p momd -p momctl" >&2; exit 2; }
done

work=$(mktemp -d "${MOM_BENCH_TMP:-${TMPDIR:-/tmp}}/mom-bench.XXXXXX")
pid=""
cleanup() {
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
rss_mb() { awk '/^VmRSS/ { printf "%.1f", $2 / 1024 }' "/proc/$1/status"; }
hwm_mb() { awk '/^VmHWM/ { printf "%.1f", $2 / 1024 }' "/proc/$1/status"; }
say() { printf '%s\n' "$*"; }
cmd() { printf '  $ %s\n' "$*"; }
die() { say "FAILED: $*"; [ -n "${log:-}" ] && [ -f "$log" ] && tail -20 "$log"; exit 1; }

# start_momd DIR PORT: starts momd, sets pid, addr, log; waits until it answers a ping.
start_momd() {
    local dir=$1 port=$2 t0 t1
    log=$work/momd.$(basename "$dir").$(date +%s%N).log
    t0=$(now)
    "$MOMD" --listen "127.0.0.1:$port" --data "$dir" --fsync "$FSYNC" 2>"$log" &
    pid=$!
    if [ "$port" = 0 ]; then
        # first start: learn the port momd was given
        for _ in $(seq 1 $((T * 100))); do
            addr=$(sed -n 's/.*listening on \(127\.0\.0\.1:[0-9]*\).*/\1/p' "$log" | head -1)
            [ -n "$addr" ] && break
            kill -0 "$pid" 2>/dev/null || die "momd exited at start"
            sleep 0.01
        done
        [ -n "$addr" ] || die "momd did not listen within ${T}s"
    else
        addr=127.0.0.1:$port
    fi
    local up=""
    for _ in $(seq 1 $((T * 100))); do
        if "$MOMCTL" -s "$addr" ping >/dev/null 2>&1; then up=1; break; fi
        kill -0 "$pid" 2>/dev/null || die "momd exited at start"
        sleep 0.01
    done
    [ -n "$up" ] || die "momd did not answer a ping within ${T}s"
    t1=$(now)
    started_in=$(secs "$t0" "$t1")
    [ "$(cat "$dir/momd.lock")" = "$pid" ] || die "momd.lock does not hold PID $pid"
}

stop_momd() {
    local t0 t1
    t0=$(now)
    kill -TERM "$pid"
    for _ in $(seq 1 $((T * 10))); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && die "momd did not stop within ${T}s of SIGTERM"
    wait "$pid"
    local rc=$?
    t1=$(now)
    stopped_in=$(secs "$t0" "$t1")
    [ "$rc" = 0 ] || die "momd exited $rc on SIGTERM"
    pid=""
}

# timed LABEL MSGS CMD...: runs CMD under timeout, prints wall time and msgs/s.
timed() {
    local label=$1 n=$2 t0 t1 rc s
    shift 2
    cmd "$*"
    t0=$(now)
    timeout "$T" bash -c "$*"
    rc=$?
    t1=$(now)
    [ "$rc" = 0 ] || die "$label exited $rc"
    s=$(secs "$t0" "$t1")
    say "  $label: $n msgs in ${s} s = $(rate "$n" "$s") msgs/s"
}

topic_msgs() {  # topic_msgs TOPIC -> stored message count from stats --json
    "$MOMCTL" -s "$addr" stats --json | tr '{' '\n' | grep "\"name\":\"$1\"" |
        sed -n 's/.*"messages":\([0-9]*\).*/\1/p'
}

disk() {  # disk DIR MSGS
    local b k
    b=$(du -sb "$1" | cut -f1)
    k=$(du -sk "$1" | cut -f1)
    say "  data dir: $b bytes apparent, $((k * 1024)) bytes allocated (du -sb / du -sk)"
    say "  = $(awk -v b="$b" -v n="$2" 'BEGIN { printf "%.1f", b / n }') bytes/msg apparent," \
        "$(awk -v b="$((k * 1024))" -v n="$2" 'BEGIN { printf "%.1f", b / n }') bytes/msg allocated" \
        "(messages are 1-7 ASCII digits, avg 5.9 bytes)"
}

say "# mom benchmark $(date -u +%Y-%m-%dT%H:%M:%SZ)"
say "momd: $("$MOMD" --version)  ($MOMD)"
say "binaries built $(date -u -r "$MOMD" +%Y-%m-%dT%H:%M:%SZ); repo now at $(git -C "$here" rev-parse --short HEAD 2>/dev/null || echo '?')"
say "machine: $(nproc) cores, $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), load $(cut -d' ' -f1-3 /proc/loadavg)"
say "fsync: $FSYNC; data in $work"
say

# ---------------------------------------------------------------- throughput, RSS
dir=$work/a
start_momd "$dir" 0
port=${addr##*:}
say "## momd on $addr (PID $pid)"
cmd "$MOMD --listen 127.0.0.1:0 --data $dir --fsync $FSYNC"
sleep 1
say "(d) RSS idle after start: $(rss_mb "$pid") MB  (VmRSS, /proc/$pid/status)"
say

say "(a) publish $N from a pipe, one connection"
timed "publish" "$N" "seq 1 $N | $MOMCTL -s $addr publish bench.seq -q"
got=$(topic_msgs bench.seq)
[ "$got" = "$N" ] || die "bench.seq holds $got messages, expected $N"
say "  RSS after: $(rss_mb "$pid") MB"
say

say "(b) replay $N"
timed "replay" "$N" "$MOMCTL -s $addr subscribe bench.seq --from all -n $N > /dev/null"
say "  RSS after: $(rss_mb "$pid") MB"
say

say "(c) $PAR concurrent publishers, $((N / PAR)) msgs each, one topic each"
per=$((N / PAR))
cmd "for i in \$(seq 1 $PAR); do seq 1 $per | $MOMCTL -s $addr publish bench.p\$i -q & done; wait"
t0=$(now)
pids=()
for i in $(seq 1 $PAR); do
    timeout "$T" bash -c "seq 1 $per | '$MOMCTL' -s $addr publish bench.p$i -q" &
    pids+=($!)
done
fail=0
for p in "${pids[@]}"; do wait "$p" || fail=$((fail + 1)); done
t1=$(now)
[ "$fail" = 0 ] || die "$fail of $PAR publishers failed"
s=$(secs "$t0" "$t1")
say "  $PAR publishers: $((per * PAR)) msgs in ${s} s = $(rate $((per * PAR)) "$s") msgs/s total"
for i in $(seq 1 $PAR); do
    got=$(topic_msgs "bench.p$i")
    [ "$got" = "$per" ] || die "bench.p$i holds $got messages, expected $per"
done
say

say "(g) one message per publish request (what a client publishing single messages sees)"
timed "256 in flight" 50000 "seq 1 50000 | $MOMCTL -s $addr publish bench.single -q --batch 1 --window 256"
timed "sequential" 2000 "seq 1 2000 | $MOMCTL -s $addr publish bench.single1 -q --batch 1 --window 1"
say

stored=$((N + per * PAR + 52000))
say "(d) RSS after (a)-(c),(g), $stored messages stored: $(rss_mb "$pid") MB (peak VmHWM $(hwm_mb "$pid") MB)"
say "    stats --json rss_bytes: $("$MOMCTL" -s "$addr" stats --json | sed -n 's/.*"rss_bytes":\([0-9]*\).*/\1/p')"
say
say "(f) disk with $stored messages stored (while running)"
disk "$dir" $stored
stop_momd
say "  stopped by SIGTERM in $stopped_in s"
disk "$dir" $stored
rm -rf "$dir"
say

# ---------------------------------------------------------------- restart
restart() {  # restart DIR STORED
    stop_momd
    say "  SIGTERM -> exit: $stopped_in s"
    start_momd "$1" "$port"
    say "  start -> first successful ping: $started_in s   (polling momctl ping every 10 ms)"
    say "  momd says: $(grep -o 'recovered in.*' "$log")"
    say "  RSS after restart: $(rss_mb "$pid") MB"
    disk "$1" "$2"
}

dir=$work/r
start_momd "$dir" "$port"
say "(e) restart, fresh momd on $addr (PID $pid), data $dir"
say "  with $N messages stored:"
timed "fill" "$N" "seq 1 $N | $MOMCTL -s $addr publish bench.restart -q"
cmd "kill -TERM \$(cat $dir/momd.lock); wait; $MOMD --listen $addr --data $dir --fsync $FSYNC &; until momctl ping; do sleep 0.01; done"
restart "$dir" "$N"
if [ "$BIG" -gt "$N" ]; then
    say
    say "  with $BIG messages stored:"
    more=$((BIG - N))
    timed "fill" "$more" "seq $((N + 1)) $BIG | $MOMCTL -s $addr publish bench.restart -q"
    got=$(topic_msgs bench.restart)
    [ "$got" = "$BIG" ] || die "bench.restart holds $got messages, expected $BIG"
    say "  RSS with $BIG stored, before restart: $(rss_mb "$pid") MB"
    restart "$dir" "$BIG"
    got=$(topic_msgs bench.restart)
    [ "$got" = "$BIG" ] || die "after restart bench.restart holds $got messages, expected $BIG"
fi
stop_momd
say
say "done"
