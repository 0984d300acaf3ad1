#!/usr/bin/env bash
# The latency section of the mount benchmark (issue 30): what a user on a real network feels.
# On loopback every request is free; here the emulator's latency fault adds LAT ms to every
# request (REST, S3, OIDC, events), and each row counts the requests the client made.
#
#   bench/run.sh latency          (or bench/latency.sh)
#   BENCH_LATENCIES="0 20" BENCH_REPEATS=3 BENCH_TARGETS="cec cecwb rclone" bench/latency.sh
#   BENCH_ROWS="git rsyncnoop" (a subset), BENCH_NO_BUILD=1 BENCH_REV=abc1234 (binaries built
#   elsewhere, from that revision), BENCH_RESULTS=path, BENCH_TIMEOUT=seconds per row (300)
#
# Rows (each on a fresh mount with a fresh cache unless said otherwise):
#   lscold     ls -l of a 1,000-file folder
#   missing    100 stats of missing names in a folder not listed yet
#   cat        cat of 200 files of 1 KiB by name, one after the other
#   find       find over 50 folders x 20 files
#   ttfb       first 4 KiB of a 64 MiB file
#   git        git status of a 300-file repository, cold mount
#   git2       git status again 2 s later, same mount
#   gitre      git status after a remount on the same cache (unmount, mount, status)
#   cp         cp -r of 200 files of 1 KiB into the mount, until cp returns
#   cpsrv      the same, until the server holds every file
#   rsyncnoop  rsync -a of a 200-file tree again, on the mount that copied it, 2 s later (a
#              fresh mount would not be a no-op for cec nor rclone: neither keeps the mtimes
#              rsync sets on the server, cec keeps them in its cache)
# Targets: cec (default options), cecwb (cec --write-back 1; write rows and git only), rclone
# (S3 backend on the emulator's gateway, --vfs-cache-mode writes).
#
# Requests are counted by the emulator itself: the latency rule is installed with a huge
# `count`, every request it delays decrements it, and `GET /_faults` tells how many are left.
# The count of a row is every request the emulator received during the row, minus the
# benchmark's own polls of the S3 listing (cpsrv); the mount's background requests (events,
# token refresh) in that window are included. Medians of BENCH_REPEATS runs (default 3).
# The git rows use one copy of the repository per target, whose index was last written by a
# git status through that target (an untimed first run), as in daily use.
# Results: bench/results/latency.md (rewritten after every row). Needs root and /dev/fuse.
set -eEuo pipefail
trap 'echo "latency: stopped: line $LINENO: $BASH_COMMAND failed" >&2' ERR

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
LATENCIES="${BENCH_LATENCIES:-0 20}"
REPEATS="${BENCH_REPEATS:-3}"
TARGETS="${BENCH_TARGETS:-cec cecwb rclone}"
ROWS_RUN="${BENCH_ROWS:-lscold missing cat find ttfb git cp rsyncnoop}"
RESULTS="${BENCH_RESULTS:-$ROOT/bench/results/latency.md}"
RUN_TIMEOUT="${BENCH_TIMEOUT:-300}"
log() { echo "== $*" >&2; }
die() { echo "latency: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "run as root (FUSE mounts)"
[ -e /dev/fuse ] || die "/dev/fuse is missing"
for c in curl rclone git rsync python3 fusermount3; do command -v $c >/dev/null || die "$c is missing"; done

WORK="$(mktemp -d /var/tmp/cec-latency-bench.XXXXXX)"
mkdir -p "$WORK/logs" "$WORK/mnt" "$WORK/cache"
EMU_PID="" DAEMON_PID="" MP="" STATUS="partial (the run stopped before its end)"
VALUES="$WORK/values.tsv" # row <TAB> latency <TAB> target <TAB> run <TAB> seconds <TAB> requests
: >"$VALUES"

stop_pid() {
  local pid=$1
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null || true
}
unmount_all() {
  local m
  for m in $(awk -v w="$WORK/" 'index($2, w) == 1 { print $2 }' /proc/mounts | sort -r); do
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
  done
}
cleanup() {
  set +e
  [ -n "$DAEMON_PID" ] && stop_pid "$DAEMON_PID"
  unmount_all
  [ -n "$EMU_PID" ] && stop_pid "$EMU_PID"
  [ -s "$VALUES" ] && write_table >/dev/null 2>&1
  if awk -v w="$WORK/" 'index($2, w) == 1 { f = 1 } END { exit !f }' /proc/mounts; then
    echo "latency: a mount under $WORK could not be removed; leaving $WORK" >&2
  elif [ -n "${BENCH_KEEP:-}" ]; then echo "latency: kept $WORK" >&2
  else rm -rf --one-file-system "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP PIPE
now() { date +%s.%N; }
median() { sort -g | awk '{a[NR]=$1} END {if (NR == 0) exit; if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }

# ---------------------------------------------------------------- build, emulator, data
if [ -z "${BENCH_NO_BUILD:-}" ]; then
  log "building cec and cells-emu (release)"
  (cd "$ROOT" && cargo build --release -q -p cec --bin cec -p cells-emu --bin cells-emu) || die "build failed"
fi
CEC="$ROOT/target/release/cec"
EMU="$ROOT/target/release/cells-emu"
EMU_PORT=$(free_port)
URL="http://127.0.0.1:$EMU_PORT"
start_emu() {
  "$EMU" serve --data "$WORK/emu" --listen "127.0.0.1:$EMU_PORT" --user bench:bench-password --faults \
    >>"$WORK/logs/emu.log" 2>&1 &
  EMU_PID=$!
  for _ in $(seq 1 200); do grep -q "listening on" "$WORK/logs/emu.log" 2>/dev/null && return 0; sleep 0.1; done
  cat "$WORK/logs/emu.log" >&2; die "cells-emu did not start"
}
start_emu; stop_pid "$EMU_PID"; : >"$WORK/logs/emu.log"
TOKEN=$("$EMU" admin user token -u bench -e 12h --data "$WORK/emu")
start_emu
export CEC_URL="$URL" CEC_TOKEN="$TOKEN" CEC_CONFIG="$WORK/cec-config" CEC_SKIP_KEYRING=true
WS=scratch PREFIX=scratch/lat
CURLCFG="$WORK/curl.cfg"
(umask 077 && printf 'user = "%s:gatewaysecret"\n' "$TOKEN" >"$CURLCFG")
s3curl() { curl -s -K "$CURLCFG" --aws-sigv4 "aws:amz:us-east-1:s3" -H "x-amz-content-sha256: UNSIGNED-PAYLOAD" "$@"; }

# The counting rule: every request the emulator serves decrements `remaining`.
BIG_COUNT=1000000000000
set_latency() { # ms: replaces the rule (its count starts afresh)
  curl -sf -X POST "$URL/_faults/clear" >/dev/null
  curl -sf -X POST -H 'content-type: application/json' \
    -d "{\"path_prefix\":\"/\",\"millis\":$1,\"count\":$BIG_COUNT}" "$URL/_faults/latency" >/dev/null
}
served() { # requests served since the rule was installed
  curl -sf "$URL/_faults" | python3 -c "import json,sys; r=[x for x in json.load(sys.stdin) if x['action']['kind']=='latency']; print($BIG_COUNT - r[0]['remaining'])"
}

log "creating the data"
L="$WORK/local"
mkdir -p "$L/lat/lsdir" "$L/lat/missdir" "$L/lat/catdir" "$L/lat/findtree" "$L/cpsrc" "$L/rsyncsrc"
KIB=$(head -c 768 /dev/urandom | base64 -w0 | head -c 1024)
# Every file its own 1 KiB (its name, then random bytes): identical files would be one
# content for a cache keyed by content (cec keys by MD5), which real trees are not.
kib() { printf '%-16.16s%s' "$1" "${KIB:16}"; }
for i in $(seq 1 1000); do kib "l$i" >"$L/lat/lsdir/f$i"; done
for i in $(seq 1 5); do kib "m$i" >"$L/lat/missdir/f$i"; done
for i in $(seq 1 200); do kib "c$i" >"$L/lat/catdir/f$i"; kib "p$i" >"$L/cpsrc/f$i"; done
for d in $(seq 1 50); do mkdir -p "$L/lat/findtree/d$d"; for i in $(seq 1 20); do kib "f$d/$i" >"$L/lat/findtree/d$d/f$i"; done; done
for d in $(seq 1 10); do mkdir -p "$L/rsyncsrc/d$d"; for i in $(seq 1 20); do kib "r$d/$i" >"$L/rsyncsrc/d$d/f$i"; done; done
head -c $((64 * 1024 * 1024)) /dev/urandom >"$L/lat/big.bin"
# The repository: 300 tracked files in 30 folders, one commit.
mkdir -p "$L/lat/repo"
for d in $(seq 1 30); do mkdir -p "$L/lat/repo/src$d"; for i in $(seq 1 10); do printf '%s %s\n%s' "$d" "$i" "$KIB" >"$L/lat/repo/src$d/m$i.c"; done; done
(cd "$L/lat/repo" && git init -q && git add -A && git -c user.name=b -c user.email=b@b commit -qm init) || die "git init failed"
# One copy per target: git rewrites its index with the stat data of the client that ran it.
for t in $TARGETS; do cp -a "$L/lat/repo" "$L/lat/repo-$t"; done
rm -rf "$L/lat/repo"
"$CEC" scp -n "$L/lat" "cells://$WS/" >"$WORK/logs/scp.log" 2>&1 || { cat "$WORK/logs/scp.log" >&2; die "upload failed"; }
server_files() {
  s3curl "$URL/io?list-type=2&max-keys=1000000&prefix=$(printf '%s/' "$1" | sed 's|/|%2F|g')" | grep -o '<Key>[^<]*</Key>' | grep -v '/</Key>$' | grep -vc '/\.[^/]*</Key>$' || true
}
[ "$(server_files "$PREFIX/lsdir")" = 1000 ] || die "the data did not reach the server"
[ "$(server_files "$PREFIX/repo/.git")" -gt 0 ] 2>/dev/null || log "note: .git holds only dot-named objects at its top"

# ---------------------------------------------------------------- mounts
SEQ=0
mount_target() { # target [cache dir to reuse]
  local t=$1 cache=${2:-}
  SEQ=$((SEQ + 1)); MP="$WORK/mnt/$t-$SEQ"
  [ -n "$cache" ] || cache="$WORK/cache/$t-$SEQ"
  CACHE="$cache"
  local logf="$WORK/logs/$t-$SEQ.log"
  mkdir -p "$MP" "$cache"
  case "$t" in
    cec) "$CEC" mount "$MP" --cache-dir "$cache" >"$logf" 2>&1 & DAEMON_PID=$! ;;
    cecwb) "$CEC" mount "$MP" --cache-dir "$cache" --write-back 1 >"$logf" 2>&1 & DAEMON_PID=$! ;;
    rclone)
      ( unset AWS_CA_BUNDLE
        export RCLONE_CONFIG=/dev/null RCLONE_CONFIG_EMU_TYPE=s3 RCLONE_CONFIG_EMU_PROVIDER=Other \
          RCLONE_CONFIG_EMU_ENDPOINT="$URL" RCLONE_CONFIG_EMU_ACCESS_KEY_ID="$TOKEN" \
          RCLONE_CONFIG_EMU_SECRET_ACCESS_KEY=gatewaysecret RCLONE_CONFIG_EMU_REGION=us-east-1 \
          RCLONE_S3_FORCE_PATH_STYLE=true RCLONE_S3_NO_CHECK_BUCKET=true
        exec rclone mount emu:io "$MP" --vfs-cache-mode writes --cache-dir "$cache" ) >"$logf" 2>&1 &
      DAEMON_PID=$! ;;
  esac
  BASE="$MP/$PREFIX"
  for _ in $(seq 1 600); do
    kill -0 "$DAEMON_PID" 2>/dev/null || { cat "$logf" >&2; DAEMON_PID=""; return 1; }
    # Ready when the mount answers for its root (not BASE: that would list the path).
    if findmnt -n "$MP" >/dev/null 2>&1 && timeout 10 stat "$MP/" >/dev/null 2>&1; then sleep 0.5; return 0; fi
    sleep 0.1
  done
  cat "$logf" >&2; return 1
}
unmount_target() {
  [ -n "$DAEMON_PID" ] || return 0
  umount "$MP" 2>/dev/null || true
  stop_pid "$DAEMON_PID"
  findmnt -n "$MP" >/dev/null 2>&1 && { umount "$MP" 2>/dev/null || umount -l "$MP" 2>/dev/null || true; }
  DAEMON_PID=""
}

# ---------------------------------------------------------------- measuring
POLLS=0
# timed ROW CMD...: runs CMD, records seconds and requests (minus POLLS made meanwhile).
timed() {
  local row=$1; shift
  local r0 r1 t0 t1 st=0
  POLLS=0; r0=$(served); t0=$(now)
  timeout "$RUN_TIMEOUT" bash -c '"$@"' _ "$@" || st=$?
  t1=$(now); r1=$(served)
  local secs reqs
  secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
  reqs=$((r1 - r0 - POLLS))
  if [ "$st" = 0 ]; then
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$row" "$LAT" "$T" "$RUN" "$secs" "$reqs" >>"$VALUES"
    echo "   $row ${LAT}ms $T run $RUN: $secs s, $reqs requests" >&2
  else
    printf '%s\t%s\t%s\t%s\tfail\tfail\n' "$row" "$LAT" "$T" "$RUN" >>"$VALUES"
    echo "   $row ${LAT}ms $T run $RUN: FAILED ($st)" >&2
  fi
  return 0
}
fresh() { unmount_target; mount_target "$T" || die "$T: mount failed"; sleep 0.5; }

do_ls() { [ "$(ls -l "$BASE/lsdir" | wc -l)" = 1001 ]; }
do_missing() { local i; for i in $(seq 1 100); do [ ! -e "$BASE/missdir/nope$i" ] || return 1; done; }
do_cat() { local i; for i in $(seq 1 200); do cat "$BASE/catdir/f$i" || return 1; done >/dev/null; }
do_find() { [ "$(find "$BASE/findtree" -type f | wc -l)" = 1000 ]; }
do_ttfb() { [ "$(head -c 4096 "$BASE/big.bin" | wc -c)" = 4096 ]; }
do_git() { git -C "$BASE/repo-$T" -c safe.directory='*' status --porcelain >/dev/null; }
do_cp() { cp -r "$L/cpsrc" "$BASE/$1"; }
wait_server() { # prefix, count
  local deadline=$(($(date +%s) + RUN_TIMEOUT))
  while POLLS=$((POLLS + 1)); [ "$(server_files "$1")" -lt "$2" ]; do
    [ "$(date +%s)" -lt "$deadline" ] || return 1
    sleep 0.2
  done
}
do_rsyncnoop() { # a true no-op transfers nothing: the itemized changes go to the log
  rsync -a -i "$L/rsyncsrc/" "$BASE/$1/" >>"$WORK/logs/rsync-$T.items"
  echo "   rsync $T: $(grep -c '^[<>c]' "$WORK/logs/rsync-$T.items" || true) items changed so far (log: every run)" >&2
}
export WORK
export -f do_ls do_missing do_cat do_find do_ttfb do_git do_cp do_rsyncnoop
export BASE L T

applies() { # row target: cec --write-back only changes writes
  [ "$2" != cecwb ] && return 0
  case "$1" in git|cp|rsyncnoop) return 0 ;; *) return 1 ;; esac
}
run_row() {
  local row=$1
  case "$row" in
    lscold) fresh; timed lscold do_ls ;;
    missing) fresh; timed missing do_missing ;;
    cat) fresh; timed cat do_cat ;;
    find) fresh; timed find do_find ;;
    ttfb) fresh; timed ttfb do_ttfb ;;
    git)
      if [ ! -e "$WORK/git-warm-$T" ]; then # the index last written by this client, as in daily use
        fresh; do_git && touch "$WORK/git-warm-$T"
      fi
      fresh; local cache=$CACHE
      timed git do_git
      sleep 2; timed git2 do_git
      unmount_target; mount_target "$T" "$cache" || die "$T: remount failed"; sleep 0.5
      timed gitre do_git ;;
    cp)
      fresh; local d="cp-$T-$LAT-$RUN"
      timed cp do_cp "$d"
      # until the server holds them: the same copy once more into another folder, then wait
      fresh; d="cps-$T-$LAT-$RUN"
      timed cpsrv do_cp "$d"
      local r0 t0; r0=$(tail -1 "$VALUES")
      if [ "$(cut -f5 <<<"$r0")" != fail ]; then
        # extend the last record with the wait for the server
        POLLS=0; local s0 t1 s1 secs
        s0=$(served); t0=$(now)
        wait_server "$PREFIX/$d" 200 || true
        t1=$(now); s1=$(served)
        secs=$(awk -v a="$t0" -v b="$t1" -v c="$(cut -f5 <<<"$r0")" 'BEGIN { printf "%.3f", b - a + c }')
        sed -i '$d' "$VALUES"
        printf 'cpsrv\t%s\t%s\t%s\t%s\t%s\n' "$LAT" "$T" "$RUN" "$secs" $(( $(cut -f6 <<<"$r0") + s1 - s0 - POLLS )) >>"$VALUES"
        echo "   cpsrv ${LAT}ms $T run $RUN: $secs s until the server holds all" >&2
      fi ;;
    rsyncnoop) # on the mount that made the copy (cec keeps the mtimes rsync sets in its cache)
      fresh; local d="rsync-$T-$LAT-$RUN"
      rsync -a "$L/rsyncsrc/" "$BASE/$d/" && wait_server "$PREFIX/$d" 200 || echo "   rsync $T: first copy failed" >&2
      sleep 2 # every entry the copy left is past --attr-timeout
      timed rsyncnoop do_rsyncnoop "$d" ;;
  esac
}

# ---------------------------------------------------------------- the table
LABELS="lscold|ls -l of 1,000 files, cold
missing|100 stats of missing names, folder not listed yet
cat|cat of 200 files of 1 KiB by name, one after the other
find|find over 50 x 20 files
ttfb|first 4 KiB of a 64 MiB file
git|git status, 300 tracked files, cold mount
git2|second git status 2 s after the first
gitre|git status after a remount on the same cache
cp|cp -r of 200 files of 1 KiB, until cp returns
cpsrv|cp -r of 200 files of 1 KiB, until the server holds them
rsyncnoop|rsync -a of a 200-file tree again, same mount 2 s later (no-op)"
cellv() { # row lat target column(5 secs, 6 requests)
  local v; v=$(awk -F'\t' -v r="$1" -v l="$2" -v t="$3" -v c="$4" '$1 == r && $2 == l && $3 == t { print $c }' "$VALUES")
  [ -n "$v" ] || { echo "—"; return; }
  local ok; ok=$(grep -v fail <<<"$v" || true)
  [ -n "$ok" ] || { echo "failed"; return; }
  echo "$ok" | median
}
write_table() {
  mkdir -p "$(dirname "$RESULTS")"
  {
    echo "# cec mount at 0 and 20 ms a request (issue 30)"
    echo
    echo "Status: $STATUS. Produced by \`bench/latency.sh\` (\`bench/run.sh latency\`) on $(date -u +%Y-%m-%dT%H:%MZ); never edited by hand."
    echo
    echo "Machine: $(nproc) cores, $(uname -sr); $("$CEC" --version 2>/dev/null | sed -n 1p) (${BENCH_REV:-$(cd "$ROOT" && git rev-parse --short HEAD)}), $(rclone version 2>/dev/null | sed -n 1p), git $(git --version | cut -d' ' -f3)."
    echo "The emulator's latency fault adds the given delay to every request; medians of $REPEATS run(s);"
    echo "each row on a fresh mount with a fresh cache unless its label says otherwise. \`requests\`: every"
    echo "request the emulator served during the row (counted by the emulator's fault rule), the"
    echo "benchmark's own polls of the server excluded. cec --write-back 1 runs the write rows and git only."
    echo
    local lat
    for lat in $LATENCIES; do
      echo "## ${lat} ms a request"
      echo
      echo "| workload | cec s | cec requests | cec --write-back s | requests | rclone s | rclone requests |"
      echo "|---|--:|--:|--:|--:|--:|--:|"
      local id label
      while IFS='|' read -r id label; do
        grep -q "^$id	$lat	" "$VALUES" || continue
        echo "| $label | $(cellv "$id" "$lat" cec 5) | $(cellv "$id" "$lat" cec 6) | $(cellv "$id" "$lat" cecwb 5) | $(cellv "$id" "$lat" cecwb 6) | $(cellv "$id" "$lat" rclone 5) | $(cellv "$id" "$lat" rclone 6) |"
      done <<<"$LABELS"
      echo
    done
  } >"$RESULTS.tmp"
  mv "$RESULTS.tmp" "$RESULTS"
}

# ---------------------------------------------------------------- main loop
for LAT in $LATENCIES; do
  set_latency "$LAT"
  for row in $ROWS_RUN; do
    log "${LAT} ms: $row"
    for T in $TARGETS; do
      applies "$row" "$T" || continue
      for RUN in $(seq 1 "$REPEATS"); do run_row "$row"; done
      unmount_target
    done
    write_table
  done
done
STATUS=complete
write_table
cat "$RESULTS"
