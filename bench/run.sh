#!/usr/bin/env bash
# The mount benchmark: cec mount against the limit (raw HTTP, the FUSE ceiling) and against
# the peers (rclone mount, s3fs), same workloads, same emulator, one machine, one run.
#
#   bench/run.sh                 full sizes: 1 GiB file, 1,000 / 10,000 small files, 3 repeats
#   BENCH_QUICK=1 bench/run.sh   small sizes (64 MiB, 200 / 1,000 files, 1 repeat): a smoke run
#
# What it does:
#   1. checks for (and, as root with apt-get, installs) curl, fio, rsync, rclone, s3fs, fuse3,
#      python3; builds cec, cells-emu and bench/fuse-ceiling in release mode;
#   2. starts cells-emu on 127.0.0.1 with a fresh data directory in a temporary folder, mints a
#      Personal Access Token for user `bench`, uploads the big file and a folder of small files
#      (the listing workload) into the `scratch` workspace (no recycle bin);
#   3. for each workload (rows) and each target (columns), runs it BENCH_REPEATS times and keeps
#      the median; targets:
#        http     raw HTTP on the same emulator (curl GET / PUT of the same bytes, S3 SigV4)
#        ceiling  bench/fuse-ceiling: a trivial in-memory fuser filesystem (the FUSE limit)
#        cec      `cec mount`, default options (warm rows: the same mount, second pass)
#        cecwb    `cec mount --write-back 1` (write rows only): close returns once journaled locally
#        rclone   Debian's rclone mount, S3 backend on the emulator's /io with the PAT as access
#                 key, --vfs-cache-mode writes (warm rows: --vfs-cache-mode full)
#        s3fs     Debian's s3fs on the same gateway
#      Writes count until the server holds every byte (rclone and s3fs upload after close: the
#      script polls the S3 listing), cold reads get a fresh mount for every repeat;
#   4. records the peak RSS (VmHWM, reset through /proc/PID/clear_refs) and CPU time of each
#      mount daemon per workload, and how busy the machine's cores were (the emulator's part);
#   5. rewrites bench/results/mount.md after every row (a run cut short still leaves a table,
#      labelled partial) and prints it at the end.
#
# Environment: BENCH_QUICK=1, BENCH_REPEATS=N, BENCH_TARGETS="http ceiling cec cecwb rclone" (add s3fs:
# it works only partly against the emulator, see TARGETS below),
# BENCH_WORKLOADS="seqread seqread4 ..." (see WORKLOADS below), BENCH_TIMEOUT=seconds per run
# (default 600), BENCH_RESULTS=path (default bench/results/mount.md), BENCH_CEC=path (measure
# that cec binary instead of this tree's release build), BENCH_TREE=folder to tar
# for the untar/rsync workloads (default /usr/include; /usr/include/linux when quick).
#
# Needs root (FUSE mounts, /proc/sys/vm/drop_caches) and /dev/fuse. Everything listens on
# 127.0.0.1. Every mount and process started here is stopped on exit, failure or Ctrl-C.
set -eEuo pipefail
# A command that stops the run says so (the table still gets the rows that finished).
trap 'echo "bench: stopped: line $LINENO: $BASH_COMMAND failed" >&2' ERR

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
# `bench/run.sh latency`: the latency section (bench/latency.sh: the emulator adds 0 and 20 ms to
# every request; the rows of issue 30 with the requests each client makes, counted).
if [ "${1:-}" = latency ]; then exec "$ROOT/bench/latency.sh"; fi
QUICK="${BENCH_QUICK:-0}"
if [ "$QUICK" = 1 ]; then
  BIG_MIB=64 SMALL_FEW=200 SMALL_MANY=1000 REPEATS="${BENCH_REPEATS:-1}"
  TREE="${BENCH_TREE:-/usr/include/linux}"
else
  BIG_MIB=1024 SMALL_FEW=1000 SMALL_MANY=10000 REPEATS="${BENCH_REPEATS:-3}"
  TREE="${BENCH_TREE:-/usr/include}"
fi
# s3fs is not in the default list: it HEADs folders, which answer 500 on the Cells gateway (as on
# a real Cells server), and retries each with back-off: every folder lookup takes seconds to
# minutes. BENCH_TARGETS="... s3fs" still runs it.
TARGETS="${BENCH_TARGETS:-http ceiling cec cecwb rclone}"
WORKLOADS="${BENCH_WORKLOADS:-seqread seqwrite ttfb createfew ls rsync untar createmany createpar cpin cpout seqread4 seqwrite4 randread}"
RUN_TIMEOUT="${BENCH_TIMEOUT:-600}"
RESULTS="${BENCH_RESULTS:-$ROOT/bench/results/mount.md}"
BIG_BYTES=$((BIG_MIB * 1024 * 1024))

log() { echo "== $*" >&2; }
die() { echo "bench: $*" >&2; exit 1; }

# ---------------------------------------------------------------- requirements
[ "$(id -u)" = 0 ] || die "run as root (FUSE mounts for every target, drop_caches)"
[ -e /dev/fuse ] || die "/dev/fuse is missing: this machine cannot mount FUSE filesystems"
declare -A PKG_OF=([curl]=curl [fio]=fio [rsync]=rsync [rclone]=rclone [s3fs]=s3fs
  [fusermount3]=fuse3 [python3]=python3 [tar]=tar [findmnt]=util-linux [cargo]="")
missing=()
for cmd in "${!PKG_OF[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 && continue
  [ -n "${PKG_OF[$cmd]}" ] || die "$cmd is missing: install a Rust toolchain (https://rustup.rs)"
  missing+=("${PKG_OF[$cmd]}")
done
if [ ${#missing[@]} -gt 0 ]; then
  command -v apt-get >/dev/null || die "missing commands; install the packages: ${missing[*]}"
  log "installing Debian packages: ${missing[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null \
    || die "could not install ${missing[*]}: install them and run again"
fi

# ---------------------------------------------------------------- state and cleanup
WORK="$(mktemp -d /var/tmp/cec-mount-bench.XXXXXX)"
mkdir -p "$WORK/logs" "$WORK/mnt"
EMU_PID=""
DAEMON_PID=""
MP=""
STATUS="partial (the run stopped before its end; the rows below are those that finished)"
VALUES="$WORK/values.tsv"   # workload <TAB> target <TAB> run <TAB> value
DAEMON="$WORK/daemon.tsv"   # workload <TAB> target <TAB> run <TAB> peak RSS KiB <TAB> CPU s
MACHINE="$WORK/machine.tsv" # workload <TAB> target <TAB> run <TAB> busy cores <TAB> emulator cores
: >"$VALUES"; : >"$DAEMON"; : >"$MACHINE"

stop_pid() { # pid: TERM, then KILL after 15 s
  local pid=$1
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null || true
}

unmount_all() { # every mount under $WORK, deepest first
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
  if awk -v w="$WORK/" 'index($2, w) == 1 { found = 1 } END { exit !found }' /proc/mounts; then
    echo "bench: a mount under $WORK could not be removed; leaving $WORK in place" >&2
  else
    [ -n "${BENCH_KEEP:-}" ] && { echo "bench: kept $WORK" >&2; return; }
    rm -rf --one-file-system "$WORK"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP PIPE

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}
now() { date +%s.%N; }
median() { sort -g | awk '{a[NR]=$1} END {if (NR == 0) exit; if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }

# ---------------------------------------------------------------- build
log "building cec, cells-emu (release) and the FUSE ceiling"
(cd "$ROOT" && cargo build --release -q -p cec --bin cec -p cells-emu --bin cells-emu) || die "build failed"
(cd "$ROOT/bench/fuse-ceiling" && CARGO_TARGET_DIR="$ROOT/target" cargo build --release -q) || die "fuse-ceiling build failed"
# BENCH_CEC=PATH measures another cec binary (e.g. one built from an older commit, for a
# before/after comparison) instead of the fresh build; the results header names it.
CEC="${BENCH_CEC:-$ROOT/target/release/cec}"
[ -x "$CEC" ] || die "BENCH_CEC=$CEC is not an executable"
EMU="$ROOT/target/release/cells-emu"
CEILING="$ROOT/target/release/fuse-ceiling"

# ---------------------------------------------------------------- emulator and data
log "starting cells-emu"
EMU_PORT=$(free_port)
URL="http://127.0.0.1:$EMU_PORT"
start_emu() {
  "$EMU" serve --data "$WORK/emu" --listen "127.0.0.1:$EMU_PORT" --user bench:bench-password \
    >>"$WORK/logs/emu.log" 2>&1 &
  EMU_PID=$!
  for _ in $(seq 1 200); do
    grep -q "listening on" "$WORK/logs/emu.log" 2>/dev/null && return 0
    sleep 0.1
  done
  cat "$WORK/logs/emu.log" >&2; die "cells-emu did not start"
}
start_emu
# The user exists once the emulator has run: stop it, mint a PAT, start it again.
stop_pid "$EMU_PID"
: >"$WORK/logs/emu.log"
TOKEN=$("$EMU" admin user token -u bench -e 12h --data "$WORK/emu")
start_emu
export CEC_URL="$URL" CEC_TOKEN="$TOKEN" CEC_CONFIG="$WORK/cec-config" CEC_SKIP_KEYRING=true

WS=scratch          # workspace: deletes are permanent, nothing piles up in a recycle bin
PREFIX="$WS/bench"  # every server path of the run lives under it
# curl reads the credentials from a 0600 file, never from its argv.
CURLCFG="$WORK/curl.cfg"
(umask 077 && printf 'user = "%s:gatewaysecret"\n' "$TOKEN" >"$CURLCFG")
s3curl() { curl -s -K "$CURLCFG" --aws-sigv4 "aws:amz:us-east-1:s3" -H "x-amz-content-sha256: UNSIGNED-PAYLOAD" "$@"; }
s3_url() { echo "$URL/io/$1"; }
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null || echo 0; }
# Ticks the whole machine spent on anything but idling (and waiting for the disk).
busy_ticks() { awk '$1 == "cpu" { print $2 + $3 + $4 + $7 + $8 + $9; exit }' /proc/stat; }
# fio needs ~0.3 s to start here: each job stamps the moment its I/O begins into FIO_STAMP
# (exec_prerun), with the machine's busy ticks and the emulator's CPU ticks at that moment;
# `timed` counts from the earliest stamp, not from the fio command.
FIO_STAMP="$WORK/fio.start"
{ declare -f cpu_ticks busy_ticks
  echo "echo \"\$(date +%s.%N) \$(busy_ticks) \$(cpu_ticks $EMU_PID)\" >>\"$FIO_STAMP\""; } >"$WORK/fio-stamp.sh"
mkdir -p "$WORK/fio"
fio_run() {
  (cd "$WORK/fio" && fio --output=/dev/null --ioengine=psync --bs=256k --invalidate=0 --group_reporting \
    --exec_prerun="bash $WORK/fio-stamp.sh" "$@")
}
export CURLCFG URL RUN_TIMEOUT WORK FIO_STAMP
export -f s3curl s3_url fio_run

log "creating the data: ${BIG_MIB} MiB file, $SMALL_MANY-file folder, tree of $TREE"
head -c "$BIG_BYTES" /dev/urandom >"$WORK/big.bin"
head -c $((BIG_BYTES / 4)) "$WORK/big.bin" >"$WORK/quarter.bin"
mkdir -p "$WORK/ls/lsdir"
KIB=$(head -c 768 /dev/urandom | base64 -w0 | head -c 1024)
for i in $(seq 1 "$SMALL_MANY"); do printf '%s' "$KIB" >"$WORK/ls/lsdir/f$i"; done
tar -C "$(dirname "$TREE")" --hard-dereference -chf "$WORK/tree.tar" "$(basename "$TREE")" 2>/dev/null || die "cannot tar $TREE"
mkdir -p "$WORK/tree" && tar -C "$WORK/tree" -xf "$WORK/tree.tar"
TREE_SRC="$WORK/tree/$(basename "$TREE")"
export TREE_SRC
TREE_FILES=$(find "$TREE_SRC" -type f ! -name '.*' | wc -l)  # as server_files counts
TREE_DIRS=$(find "$TREE_SRC" -type d | wc -l)
TREE_MIB=$(du -sm "$TREE_SRC" | cut -f1)

code=$(s3curl -o "$WORK/logs/put.out" -w '%{http_code}' -T "$WORK/big.bin" "$(s3_url "$PREFIX/big.bin")")
[ "$code" = 200 ] || { cat "$WORK/logs/put.out" >&2; die "upload of big.bin failed (HTTP $code)"; }
"$CEC" scp -n "$WORK/ls/lsdir" "cells://$PREFIX" >"$WORK/logs/scp.log" 2>&1 \
  || { cat "$WORK/logs/scp.log" >&2; die "cec scp of the listing folder failed"; }

# Files (not folders) the server holds under a prefix (recursive S3 listing: never paginated).
# Files under a prefix at their final names: folder markers and dotfiles (rsync's temporary
# names, which a mount may still be renaming) are not counted.
server_files() {
  s3curl "$URL/io?list-type=2&max-keys=1000000&prefix=$(printf '%s/' "$1" | sed 's|/|%2F|g')" | grep -o '<Key>[^<]*</Key>' | grep -v '/</Key>$' | grep -vc '/\.[^/]*</Key>$' || true
}
server_size() { # size of one object, 0 when absent
  s3curl -I "$(s3_url "$1")" | awk 'tolower($1) == "content-length:" { gsub("\r", "", $2); print $2; found = 1 } END { if (!found) print 0 }'
}
n=$(server_files "$PREFIX/lsdir")
[ "$n" = "$SMALL_MANY" ] || die "the listing folder did not reach the server ($n of $SMALL_MANY files)"
[ "$(server_size "$PREFIX/big.bin")" = "$BIG_BYTES" ] || die "big.bin did not reach the server"
# Wait until the server holds COUNT files under PREFIX (peers that upload after close).
wait_files() {
  local deadline=$(($(date +%s) + RUN_TIMEOUT))
  while [ "$(server_files "$1")" -lt "$2" ]; do
    [ "$(date +%s)" -lt "$deadline" ] || return 1
    sleep 0.2
  done
}
wait_size() {
  local deadline=$(($(date +%s) + RUN_TIMEOUT))
  while [ "$(server_size "$1")" != "$2" ]; do
    [ "$(date +%s)" -lt "$deadline" ] || return 1
    sleep 0.2
  done
}
export -f server_files server_size wait_files wait_size
delete_object() { s3curl -o /dev/null -X DELETE "$(s3_url "$1")" || true; }

# ---------------------------------------------------------------- mounts
# mount_target TARGET [full]: mounts a fresh instance; sets MP (mountpoint), BASE (the folder
# holding PREFIX's content) and DAEMON_PID. `full` = rclone's --vfs-cache-mode full.
MOUNT_SEQ=0
mount_target() {
  local target=$1 mode=${2:-writes}
  MOUNT_SEQ=$((MOUNT_SEQ + 1))
  MP="$WORK/mnt/$target-$MOUNT_SEQ"
  local cache="$WORK/cache/$target-$MOUNT_SEQ" logf="$WORK/logs/$target-$MOUNT_SEQ.log"
  mkdir -p "$MP" "$cache"
  case "$target" in
    ceiling)
      "$CEILING" "$MP" --preload "big.bin=$WORK/big.bin" >"$logf" 2>&1 &
      DAEMON_PID=$!; BASE="$MP" ;;
    cec)
      "$CEC" mount "$MP" --cache-dir "$cache" >"$logf" 2>&1 &
      DAEMON_PID=$!; BASE="$MP/$PREFIX" ;;
    cecwb) # the opt-in write-back mode: close returns once the data is journaled locally
      "$CEC" mount "$MP" --cache-dir "$cache" --write-back 1 >"$logf" 2>&1 &
      DAEMON_PID=$!; BASE="$MP/$PREFIX" ;;
    rclone) # the bucket root: rclone HEADs a sub-path at start, and folders answer HEAD with 500
      ( unset AWS_CA_BUNDLE  # it breaks rclone's S3 backend (LoadCustomCABundleError)
        export RCLONE_CONFIG=/dev/null RCLONE_CONFIG_EMU_TYPE=s3 RCLONE_CONFIG_EMU_PROVIDER=Other \
          RCLONE_CONFIG_EMU_ENDPOINT="$URL" RCLONE_CONFIG_EMU_ACCESS_KEY_ID="$TOKEN" \
          RCLONE_CONFIG_EMU_SECRET_ACCESS_KEY=gatewaysecret RCLONE_CONFIG_EMU_REGION=us-east-1 \
          RCLONE_S3_FORCE_PATH_STYLE=true RCLONE_S3_NO_CHECK_BUCKET=true
        exec rclone mount emu:io "$MP" --vfs-cache-mode "$mode" --cache-dir "$cache" ) >"$logf" 2>&1 &
      DAEMON_PID=$!; BASE="$MP/$PREFIX" ;;
    s3fs)
      printf '%s:gatewaysecret\n' "$TOKEN" >"$WORK/s3fs.passwd"; chmod 600 "$WORK/s3fs.passwd"
      s3fs "io:/$WS" "$MP" -f -o url="$URL" -o use_path_request_style -o endpoint=us-east-1 \
        -o passwd_file="$WORK/s3fs.passwd" -o sigv4 >"$logf" 2>&1 &
      DAEMON_PID=$!; BASE="$MP/bench" ;;
    *) die "unknown target $target" ;;
  esac
  for _ in $(seq 1 300); do
    if ! kill -0 "$DAEMON_PID" 2>/dev/null; then
      cat "$logf" >&2; DAEMON_PID=""; return 1
    fi
    # (stat under timeout: a stuck FUSE daemon must not hang the script)
    if findmnt -n "$MP" >/dev/null 2>&1 && timeout 10 stat "$BASE" >/dev/null 2>&1; then return 0; fi
    sleep 0.1
  done
  cat "$logf" >&2; return 1
}

unmount_target() {
  [ -n "$DAEMON_PID" ] || return 0
  # Every daemon here unmounts on SIGTERM; umount first so none is left with a dead mount.
  umount "$MP" 2>/dev/null || true
  stop_pid "$DAEMON_PID"
  if findmnt -n "$MP" >/dev/null 2>&1; then umount "$MP" 2>/dev/null || umount -l "$MP" 2>/dev/null || true; fi
  DAEMON_PID=""
}

# ---------------------------------------------------------------- measuring
hwm_kib() { awk '/^VmHWM/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }
TICKS=$(getconf CLK_TCK)

# timed WORKLOAD TARGET RUN CMD...: runs CMD (bounded by RUN_TIMEOUT), sets ELAPSED (s) and
# records the daemon's peak RSS and CPU time over the run, and the machine's busy CPU with the
# emulator's part of it. Returns CMD's status.
timed() {
  local wl=$1 target=$2 run=$3; shift 3
  local t0 t1 c0=0 status=0 e0 b0
  e0=$(cpu_ticks "$EMU_PID"); b0=$(busy_ticks)
  if [ -n "$DAEMON_PID" ]; then
    echo 5 >"/proc/$DAEMON_PID/clear_refs" 2>/dev/null || true
    c0=$(cpu_ticks "$DAEMON_PID")
  fi
  rm -f "$FIO_STAMP"
  t0=$(now)
  timeout "$RUN_TIMEOUT" bash -c '"$@"' _ "$@" || status=$?  # bash: CMD may be an exported function
  t1=$(now)
  [ -s "$FIO_STAMP" ] && read -r t0 b0 e0 < <(sort -g "$FIO_STAMP" | head -1)
  ELAPSED=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
  # The machine's busy CPU over the run, as cores on average, and the emulator's share of it.
  local e1 b1
  e1=$(cpu_ticks "$EMU_PID"); b1=$(busy_ticks)
  printf '%s\t%s\t%s\t%s\n' "$wl" "$target" "$run" "$(awk -v b0="$b0" -v b1="$b1" -v e0="$e0" -v e1="$e1" \
    -v t="$TICKS" -v w="$ELAPSED" 'BEGIN { if (w <= 0) w = 0.001; printf "%.2f\t%.2f", (b1 - b0) / t / w, (e1 - e0) / t / w }')" >>"$MACHINE"
  if [ -n "$DAEMON_PID" ]; then
    local c1 hwm
    c1=$(cpu_ticks "$DAEMON_PID"); hwm=$(hwm_kib "$DAEMON_PID")
    printf '%s\t%s\t%s\t%s\t%s\n' "$wl" "$target" "$run" "$hwm" \
      "$(awk -v a="$c0" -v b="$c1" -v t="$TICKS" 'BEGIN { printf "%.2f", (b - a) / t }')" >>"$DAEMON"
  fi
  return $status
}
record() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >>"$VALUES"; echo "   $1 $2 run $3: $4" >&2; }
fail() { record "$1" "$2" "$3" fail; }
mbps() { awk -v b="$1" -v s="$2" 'BEGIN { printf "%.0f", b / s / 1e6 }'; }
ms() { awk -v s="$1" 'BEGIN { printf "%.1f", s * 1000 }'; }


# Each workload function: wl_NAME TARGET RUN (a mounted TARGET except for http). It records
# one or more rows. FRESH_<name>=1 means every repeat gets a freshly mounted target.
FRESH_seqread=1
wl_seqread() {
  local t=$1 r=$2
  if [ "$t" = http ]; then
    timed seqread "$t" "$r" s3curl -f -o /dev/null "$(s3_url "$PREFIX/big.bin")" \
      && record seqread "$t" "$r" "$(mbps $BIG_BYTES "$ELAPSED")" || fail seqread "$t" "$r"
    return
  fi
  local job=(fio_run --name=seqread --rw=read --readonly --filename="$BASE/big.bin" --size="$BIG_BYTES")
  timed seqread "$t" "$r" "${job[@]}" && record seqread "$t" "$r" "$(mbps $BIG_BYTES "$ELAPSED")" || fail seqread "$t" "$r"
  if [ "$t" = rclone ]; then # warm rows: --vfs-cache-mode full, read once, then measure
    unmount_target
    mount_target rclone full || { echo "   rclone --vfs-cache-mode full: mount failed" >&2; fail seqreadwarm "$t" "$r"; return 0; }
    job=(fio_run --name=seqread --rw=read --readonly --filename="$BASE/big.bin" --size="$BIG_BYTES") # the new mount's path
    timeout "$RUN_TIMEOUT" bash -c '"$@"' _ "${job[@]}" || true
  fi
  timed seqreadwarm "$t" "$r" "${job[@]}" && record seqreadwarm "$t" "$r" "$(mbps $BIG_BYTES "$ELAPSED")" || fail seqreadwarm "$t" "$r"
}

FRESH_seqread4=1
get_quarters() { # server path, quarter size: 4 ranged GETs at once
  local i pids=()
  for i in 0 1 2 3; do
    s3curl -f -o /dev/null -r "$((i * $2))-$(((i + 1) * $2 - 1))" "$(s3_url "$1")" & pids+=($!)
  done
  for i in "${pids[@]}"; do wait "$i" || return 1; done
}
export -f get_quarters
wl_seqread4() {
  local t=$1 r=$2 q=$((BIG_BYTES / 4))
  if [ "$t" = http ]; then
    timed seqread4 "$t" "$r" get_quarters "$PREFIX/big.bin" "$q" \
      && record seqread4 "$t" "$r" "$(mbps $BIG_BYTES "$ELAPSED")" || fail seqread4 "$t" "$r"
    return
  fi
  timed seqread4 "$t" "$r" fio_run --name=seqread4 --rw=read --readonly --filename="$BASE/big.bin" \
    --numjobs=4 --size="$q" --offset_increment="$q" \
    && record seqread4 "$t" "$r" "$(mbps $BIG_BYTES "$ELAPSED")" || fail seqread4 "$t" "$r"
}

FRESH_randread=1
# The raw limit of random reads: as many 256 KiB ranged GETs at random block offsets as the
# mount's row reads, in series on one keep-alive connection (one curl, one config block per
# GET; the credentials come from the 0600 CURLCFG, never from argv).
randread_config() { # server path, bytes to read
  local n=$(($2 / 262144)) blocks=$((BIG_BYTES / 262144))
  awk -v n="$n" -v blocks="$blocks" -v url="$(s3_url "$1")" -v cfg="$CURLCFG" 'BEGIN {
    getline user < cfg
    srand(1)
    for (i = 0; i < n; i++) {
      b = int(rand() * blocks)
      if (i > 0) print "next"
      printf "%s\nurl = \"%s\"\nrange = \"%d-%d\"\noutput = \"/dev/null\"\n", user, url, b * 262144, b * 262144 + 262143
      print "aws-sigv4 = \"aws:amz:us-east-1:s3\""
      print "header = \"x-amz-content-sha256: UNSIGNED-PAYLOAD\""
      print "silent"
      print "fail"
    }
  }'
}
wl_randread() {
  local t=$1 r=$2 amount=$((BIG_BYTES / 4))
  if [ "$t" = http ]; then
    (umask 077 && randread_config "$PREFIX/big.bin" "$amount" >"$WORK/randread.curl")
    timed randread "$t" "$r" curl -K "$WORK/randread.curl" \
      && record randread "$t" "$r" "$(mbps $amount "$ELAPSED")" || fail randread "$t" "$r"
    return
  fi
  timed randread "$t" "$r" fio_run --name=randread --rw=randread --readonly --filename="$BASE/big.bin" \
    --size="$BIG_BYTES" --io_size="$amount" --randrepeat=1 \
    && record randread "$t" "$r" "$(mbps $amount "$ELAPSED")" || fail randread "$t" "$r"
}

FRESH_ttfb=1
wl_ttfb() {
  local t=$1 r=$2
  if [ "$t" = http ]; then
    local out
    out=$(s3curl -f -o /dev/null -r 0-4095 -w '%{time_starttransfer}' "$(s3_url "$PREFIX/big.bin")") \
      && record ttfb "$t" "$r" "$(ms "$out")" || fail ttfb "$t" "$r"
    return
  fi
  timed ttfb "$t" "$r" head -c 4096 "$BASE/big.bin" >/dev/null && record ttfb "$t" "$r" "$(ms "$ELAPSED")" || fail ttfb "$t" "$r"
}

# Writes: the run ends when the server holds every byte (the ceiling has no server).
write_done() { # target, server path, size
  [ "$1" = ceiling ] || [ "$1" = http ] || wait_size "$2" "$3"
}
files_done() { # target, server prefix, count
  [ "$1" = ceiling ] || wait_files "$2" "$3"
}
run_dir() { echo "$1-$2-$3"; } # workload, target, run: a unique folder name
export -f write_done files_done

wl_seqwrite() {
  local t=$1 r=$2 d; d=$(run_dir seqwrite "$t" "$r")
  if [ "$t" = http ]; then
    timed seqwrite "$t" "$r" s3curl -f -o /dev/null -T "$WORK/big.bin" "$(s3_url "$PREFIX/$d/w.bin")" \
      && record seqwrite "$t" "$r" "$(mbps $BIG_BYTES "$ELAPSED")" || fail seqwrite "$t" "$r"
  else
    mkdir -p "$BASE/$d"
    timed seqwrite "$t" "$r" bash -c 'fio_run --name=seqwrite --rw=write --filename="$1" --size="$2" --fallocate=none && write_done "$3" "$4" "$2"' \
      _ "$BASE/$d/w.bin" "$BIG_BYTES" "$t" "$PREFIX/$d/w.bin" \
      && record seqwrite "$t" "$r" "$(mbps $BIG_BYTES "$ELAPSED")" || fail seqwrite "$t" "$r"
    rm -f "$BASE/$d/w.bin" || true  # the ceiling keeps it in memory
  fi
  delete_object "$PREFIX/$d/w.bin"
}

wl_seqwrite4() {
  local t=$1 r=$2 d q=$((BIG_BYTES / 4)); d=$(run_dir seqwrite4 "$t" "$r")
  if [ "$t" = http ]; then
    par_put() {
      local i pids=()
      for i in 0 1 2 3; do
        s3curl -f -o /dev/null -T "$WORK/quarter.bin" "$(s3_url "$PREFIX/$d/w.$i")" & pids+=($!)
      done
      for i in "${pids[@]}"; do wait "$i" || return 1; done
    }
    local t0 t1; t0=$(now)
    if par_put; then t1=$(now); record seqwrite4 "$t" "$r" "$(mbps $BIG_BYTES "$(awk -v a="$t0" -v b="$t1" 'BEGIN{print b-a}')")"; else fail seqwrite4 "$t" "$r"; fi
  else
    mkdir -p "$BASE/$d"
    timed seqwrite4 "$t" "$r" bash -c 'fio_run --name=w --rw=write --directory="$1" --numjobs=4 --size="$2" --fallocate=none && files_done "$3" "$4" 4' \
      _ "$BASE/$d" "$q" "$t" "$PREFIX/$d" \
      && record seqwrite4 "$t" "$r" "$(mbps $BIG_BYTES "$ELAPSED")" || fail seqwrite4 "$t" "$r"
    rm -f "$BASE/$d"/w.* || true
  fi
  local f; for f in w.0 w.1 w.2 w.3 w.0.0 w.1.0 w.2.0 w.3.0; do delete_object "$PREFIX/$d/$f"; done
}

wl_cpin() {
  local t=$1 r=$2 d; d=$(run_dir cpin "$t" "$r")
  [ "$t" = http ] && return
  mkdir -p "$BASE/$d"
  timed cpin "$t" "$r" bash -c 'cp "$1" "$2" && write_done "$3" "$4" "$5"' \
    _ "$WORK/big.bin" "$BASE/$d/big.bin" "$t" "$PREFIX/$d/big.bin" "$BIG_BYTES" \
    && record cpin "$t" "$r" "$(mbps $BIG_BYTES "$ELAPSED")" || fail cpin "$t" "$r"
  rm -f "$BASE/$d/big.bin" || true
  delete_object "$PREFIX/$d/big.bin"
}

FRESH_cpout=1
wl_cpout() {
  local t=$1 r=$2
  [ "$t" = http ] && return
  timed cpout "$t" "$r" cp "$BASE/big.bin" /dev/shm/cec-bench-out.bin \
    && record cpout "$t" "$r" "$(mbps $BIG_BYTES "$ELAPSED")" || fail cpout "$t" "$r"
  rm -f /dev/shm/cec-bench-out.bin
}

create_files() { # folder, count, 1 KiB of text[, first file, step]
  local i
  mkdir -p "$1" || return 1
  for i in $(seq "${4:-1}" "${5:-1}" "$2"); do printf '%s' "$3" >"$1/f$i" || return 1; done
}
# The raw floor of a client that stores each file before the next one: PUTs in series on one
# keep-alive connection (one curl, a config file of the uploads).
put_series() { # stdin: lines "server key<TAB>local file"
  local key file cfg codes; cfg=$(mktemp)
  # (no `$(s3_url ...)` per file: a subshell each would add seconds to the floor it measures)
  while IFS=$'\t' read -r key file; do
    printf 'url = "%s"\nupload-file = "%s"\noutput = "/dev/null"\n' "$URL/io/$key" "$file"
  done >"$cfg"
  codes=$(s3curl -K "$cfg" -w '%{http_code}\n' | sort -u); rm -f "$cfg"
  [ "$codes" = 200 ]
}
put_files() { # server prefix, count, file to upload[, first file, step]
  local i
  for i in $(seq "${4:-1}" "${5:-1}" "$2"); do printf '%s/f%s\t%s\n' "$1" "$i" "$3"; done | put_series
}
# The same files by 4 writers at once (file i by writer i mod 4): what a parallel job (`make
# -j`, `cp` in parallel, a build) asks; the raw floor is 4 PUT series at once, the
# emulator's throughput for small files on this machine.
by_4_writers() { # command args...: runs it as 4 writers at once (first file, step 4)
  local w pids=() ok=0
  for w in 1 2 3 4; do "$@" "$w" 4 & pids+=($!); done
  for w in "${pids[@]}"; do wait "$w" || ok=1; done
  return $ok
}
create_files_par() { by_4_writers create_files "$@"; }
put_files_par() { by_4_writers put_files "$@"; }
export -f put_series create_files put_files by_4_writers create_files_par put_files_par
wl_create() { # name, count, files|files_par, target, run
  local wl=$1 n=$2 how=$3 t=$4 r=$5 d; d=$(run_dir "$wl" "$t" "$r")
  if [ "$t" = http ]; then
    printf '%s' "$KIB" >"$WORK/kib.txt"
    timed "$wl" "$t" "$r" "put_$how" "$PREFIX/$d" "$n" "$WORK/kib.txt" \
      && record "$wl" "$t" "$r" "$ELAPSED" || fail "$wl" "$t" "$r"
    return
  fi
  timed "$wl" "$t" "$r" bash -c 'create_$1 "$2" "$3" "$4" && files_done "$5" "$6" "$3"' \
    _ "$how" "$BASE/$d" "$n" "$KIB" "$t" "$PREFIX/$d" \
    && record "$wl" "$t" "$r" "$ELAPSED" || fail "$wl" "$t" "$r"
}
wl_createfew() { wl_create createfew "$SMALL_FEW" files "$@"; }
wl_createmany() { wl_create createmany "$SMALL_MANY" files "$@"; }
wl_createpar() { wl_create createpar "$SMALL_MANY" files_par "$@"; }

FRESH_ls=1
wl_ls() {
  local t=$1 r=$2
  [ "$t" = http ] && return
  if [ "$t" = ceiling ]; then # no server behind it: fill it, then let the kernel forget
    create_files "$BASE/lsdir" "$SMALL_MANY" "$KIB"
    sleep 1.2
  fi
  sync; echo 2 >/proc/sys/vm/drop_caches
  timed lscold "$t" "$r" bash -c '[ "$(ls -l "$1" | wc -l)" = "$2" ]' _ "$BASE/lsdir" $((SMALL_MANY + 1)) \
    && record lscold "$t" "$r" "$ELAPSED" || fail lscold "$t" "$r"
  timed lswarm "$t" "$r" bash -c '[ "$(ls -l "$1" | wc -l)" = "$2" ]' _ "$BASE/lsdir" $((SMALL_MANY + 1)) \
    && record lswarm "$t" "$r" "$ELAPSED" || fail lswarm "$t" "$r"
}

# The raw floor of the tree rows for a client that stores each file before the next: every
# file of the tree PUT in series on one connection (parent folders come with the keys).
put_tree() { # server prefix
  local f
  (cd "$TREE_SRC" && find . -type f ! -name '.*' | sed 's|^\./||') | while IFS= read -r f; do
    printf '%s/%s\t%s\n' "$1" "$f" "$TREE_SRC/$f"
  done | put_series
}
export -f put_tree
wl_untar() {
  local t=$1 r=$2 d; d=$(run_dir untar "$t" "$r")
  if [ "$t" = http ]; then
    timed untar "$t" "$r" put_tree "$PREFIX/$d" && record untar "$t" "$r" "$ELAPSED" || fail untar "$t" "$r"
    return
  fi
  mkdir -p "$BASE/$d"
  timed untar "$t" "$r" bash -c 'tar -C "$1" -xf "$2" && files_done "$3" "$4" "$5"' \
    _ "$BASE/$d" "$WORK/tree.tar" "$t" "$PREFIX/$d" "$TREE_FILES" \
    && record untar "$t" "$r" "$ELAPSED" || fail untar "$t" "$r"
}

wl_rsync() {
  local t=$1 r=$2 d; d=$(run_dir rsync "$t" "$r")
  if [ "$t" = http ]; then # the same floor as untar's: the tree's files, each stored in turn
    timed rsync "$t" "$r" put_tree "$PREFIX/$d" && record rsync "$t" "$r" "$ELAPSED" || fail rsync "$t" "$r"
    return
  fi
  timed rsync "$t" "$r" bash -c 'rsync -a "$1" "$2" && files_done "$3" "$4" "$5"' \
    _ "$TREE_SRC/" "$BASE/$d/" "$t" "$PREFIX/$d" "$TREE_FILES" \
    && record rsync "$t" "$r" "$ELAPSED" || fail rsync "$t" "$r"
  timed rsyncnoop "$t" "$r" rsync -a "$TREE_SRC/" "$BASE/$d/" \
    && record rsyncnoop "$t" "$r" "$ELAPSED" || fail rsyncnoop "$t" "$r"
}

# ---------------------------------------------------------------- the table
# Rows: id | label | unit | better (high/low)
ROWS="seqread|sequential read, 1 job (fio 256 KiB)|MB/s|high
seqreadwarm|sequential read, 1 job, warm cache|MB/s|high
seqread4|sequential read, 4 jobs|MB/s|high
randread|random 256 KiB reads (1/4 of the file)|MB/s|high
ttfb|time to first byte (4 KiB, fresh mount)|ms|low
seqwrite|sequential write, 1 job (until on the server)|MB/s|high
seqwrite4|sequential write, 4 jobs x 1/4|MB/s|high
cpin|cp of the big file into the mount|MB/s|high
cpout|cp of the big file out of the mount|MB/s|high
createfew|create $SMALL_FEW files of 1 KiB|s|low
createmany|create $SMALL_MANY files of 1 KiB|s|low
createpar|create $SMALL_MANY files of 1 KiB, 4 writers at once|s|low
lscold|ls -l of a $SMALL_MANY-file folder, cold|s|low
lswarm|ls -l of the same folder, warm|s|low
untar|untar of $TREE_FILES files ($TREE_MIB MiB)|s|low
rsync|rsync -a of the same tree|s|low
rsyncnoop|rsync -a again (no-op)|s|low"

cell_values() { awk -F'\t' -v w="$1" -v t="$2" '$1 == w && $2 == t { print $4 }' "$VALUES"; }
# Empty when the target did not run (a subset without cec): not a failure of the run.
cell_median() { cell_values "$1" "$2" | { grep -v fail || true; } | median; }
cell() { # workload target better cec_median -> "figure (ratio)" or "—"
  local vals med fails n
  vals=$(cell_values "$1" "$2")
  [ -n "$vals" ] || { echo "—"; return; }
  n=$(echo "$vals" | grep -vc fail || true)
  fails=$(echo "$vals" | grep -c fail || true)
  [ "$n" -gt 0 ] || { echo "failed"; return; }
  med=$(echo "$vals" | grep -v fail | median)
  local noisy
  noisy=$(echo "$vals" | grep -v fail | awk -v m="$med" 'NR == 1 { lo = $1; hi = $1 } { if ($1 < lo) lo = $1; if ($1 > hi) hi = $1 } END { if (NR > 1 && m > 0 && (hi - lo) / m > 0.2) print "~" }')
  local text="$noisy$med"
  [ "$fails" -gt 0 ] && text="$text ($fails failed)"
  if [ "$2" != cec ] && [ -n "$4" ] && [ "$4" != 0 ]; then
    text="$text ($(awk -v p="$med" -v c="$4" -v b="$3" 'BEGIN { if (p == 0) { print "-"; exit } r = (b == "high") ? c / p : p / c; printf "%.2fx", r }'))"
  fi
  echo "$text"
}
wb_cell() { # workload better -> cec --write-back's figure, and how many times better than rclone
  local text wb rc
  text=$(cell "$1" cecwb "$2" "")
  wb=$(cell_median "$1" cecwb)
  rc=$(cell_median "$1" rclone)
  if [ -n "$wb" ] && [ -n "$rc" ] && [ "$wb" != 0 ] && [ "$rc" != 0 ]; then
    text="$text ($(awk -v w="$wb" -v r="$rc" -v b="$2" 'BEGIN { printf "%.2fx", (b == "high") ? w / r : r / w }') rclone's)"
  fi
  echo "$text"
}
daemon_cell() { # workload target -> "peak MiB / median CPU s"
  local hwm cpu
  hwm=$(awk -F'\t' -v w="$1" -v t="$2" '$1 == w && $2 == t && $4 > m { m = $4 } END { if (m) printf "%.0f", m / 1024 }' "$DAEMON")
  [ -n "$hwm" ] || { echo "—"; return; }
  cpu=$(awk -F'\t' -v w="$1" -v t="$2" '$1 == w && $2 == t { print $5 }' "$DAEMON" | median)
  echo "$hwm MiB / $cpu s"
}

machine_cell() { # workload target -> "busy cores (emulator cores)", medians over the runs
  local busy emu
  busy=$(awk -F'\t' -v w="$1" -v t="$2" '$1 == w && $2 == t { print $4 }' "$MACHINE" | median)
  [ -n "$busy" ] || { echo "—"; return; }
  emu=$(awk -F'\t' -v w="$1" -v t="$2" '$1 == w && $2 == t { print $5 }' "$MACHINE" | median)
  echo "$busy ($emu)"
}

write_table() {
  mkdir -p "$(dirname "$RESULTS")"
  local cpu mem kernel
  cpu=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
  mem=$(awk '/^MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo)
  kernel=$(uname -sr)
  {
    echo "# cec mount vs the limit and the peers"
    echo
    if [ "$QUICK" = 1 ]; then echo "**QUICK RUN (BENCH_QUICK=1): small sizes, not the reference figures.**"; echo; fi
    echo "Status: $STATUS. Produced by \`bench/run.sh\` on $(date -u +%Y-%m-%dT%H:%MZ); never edited by hand."
    echo
    echo "Machine: $(nproc) cores ($cpu), $mem RAM, $kernel, $(. /etc/os-release && echo "$PRETTY_NAME")."
    if [ -n "${BENCH_CEC:-}" ]; then echo "cec binary: \`$BENCH_CEC\` (BENCH_CEC), not this tree's build."; echo; fi
    echo "Versions: $("$CEC" --version 2>/dev/null | sed -n 1p), $(rclone version 2>/dev/null | sed -n 1p),"
    echo "$(s3fs --version 2>/dev/null | sed -n 1p | sed 's/ *$//'), $(fio --version), curl $(curl --version | head -1 | cut -d' ' -f2)."
    echo
    echo "Sizes: big file ${BIG_MIB} MiB; small files 1 KiB; listing folder $SMALL_MANY files; tree \`$TREE\` ($TREE_FILES files, $TREE_DIRS folders, $TREE_MIB MiB);"
    echo "median of $REPEATS run(s) per cell. All on 127.0.0.1 against one cells-emu (\`scratch\` workspace)."
    echo
    echo "Each peer cell: the median, then in brackets how many times better cec is (cec/peer for"
    echo "MB/s, peer/cec for times: above 1.00x cec wins, below it the peer or the limit is ahead)."
    echo "\`~\` marks a noisy cell (runs spread over more than 20% of the median). \`—\`: not applicable."
    echo
    echo "| workload | unit | raw HTTP | FUSE ceiling | **cec** | cec --write-back 1 | rclone mount | s3fs | cec daemon: peak RSS / CPU | rclone daemon |"
    echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    local id label unit better
    while IFS='|' read -r id label unit better; do
      grep -q "^$id	" "$VALUES" || continue
      local c; c=$(cell_median "$id" cec)
      echo "| $label | $unit | $(cell "$id" http "$better" "$c") | $(cell "$id" ceiling "$better" "$c") | **$(cell "$id" cec "$better" "$c")** | $(wb_cell "$id" "$better") | $(cell "$id" rclone "$better" "$c") | $(cell "$id" s3fs "$better" "$c") | $(daemon_cell "$id" cec) | $(daemon_cell "$id" rclone) |"
    done <<<"$ROWS"
    echo
    echo "Notes: raw HTTP is curl on the emulator's S3 gateway (SigV4, the PAT as access key): GET for reads"
    echo "(4 parallel ranged GETs for 4 jobs, a 4 KiB range for the first byte, for random reads as many 256 KiB"
    echo "ranged GETs at random offsets in series on one connection), PUT for writes; for the create"
    echo "rows and the tree rows (untar, rsync: the tree's files), one PUT per file in series on one keep-alive"
    echo "connection: the floor of any client whose \`close\` returns once the file is on the server (cec's"
    echo "default), whatever its implementation; with 4 writers,"
    echo "4 such series at once: the emulator's throughput for small files, the floor of every client. Writes through"
    echo "a mount count until the server lists every file at its full size (rclone and s3fs upload after"
    echo "close). Cold rows mount afresh for every run; warm rows repeat the read on the same mount (rclone:"
    echo "on a \`--vfs-cache-mode full\` mount after one untimed read). \`ls -l\` cold runs after dropping the"
    echo "kernel's dentry and inode caches. Daemon figures: VmHWM (reset before each run) and user+system CPU"
    echo "over the run, max RSS and median CPU over the runs. A run over BENCH_TIMEOUT ($RUN_TIMEOUT s) counts as failed."
    echo "\`cec --write-back 1\` (write rows only; its ratio is against rclone, whose mode it shares: the other ratios compare cec's default mode): \`close\`"
    echo "returns once the data is in the local journal (fsynced; replayed after a crash) and uploads start"
    echo "a second later, 8 at a time, like rclone's \`--vfs-cache-mode writes\`. cec's default \`close\` returns"
    echo "only once the data is on the server, so every small file costs one upload round trip in series."
    echo "rclone sees at most 1,000 entries of a folder here: the Cells gateway (like the real server) treats"
    echo "ListObjects' max-keys as a node limit and never paginates, so rclone's 10,000-file listing rows fail."
    echo
    echo "## Where the machine's CPU went"
    echo
    echo "Cores busy on average during each run (all processes: the mount daemon, the emulator, fio, tar,"
    echo "curl, the kernel), then in brackets the emulator's part; medians over the runs. This machine has"
    echo "$(nproc) cores: a cell near $(nproc) is bound by CPU, and a mount can only go faster there by"
    echo "spending less of it, wherever that CPU goes. The emulator's part is the server's work, which a"
    echo "real deployment would run on another machine."
    echo
    echo "| workload | raw HTTP | FUSE ceiling | **cec** | cec --write-back 1 | rclone mount | s3fs |"
    echo "|---|---:|---:|---:|---:|---:|---:|"
    while IFS='|' read -r id label unit better; do
      grep -q "^$id	" "$MACHINE" || continue
      echo "| $label | $(machine_cell "$id" http) | $(machine_cell "$id" ceiling) | **$(machine_cell "$id" cec)** | $(machine_cell "$id" cecwb) | $(machine_cell "$id" rclone) | $(machine_cell "$id" s3fs) |"
    done <<<"$ROWS"
  } >"$RESULTS.tmp"
  mv "$RESULTS.tmp" "$RESULTS"
}

# ---------------------------------------------------------------- main loop
WRITE_WORKLOADS="seqwrite seqwrite4 cpin createfew createmany createpar untar rsync"
log "measuring: workloads [$WORKLOADS], targets [$TARGETS], $REPEATS run(s) each"
for wl in $WORKLOADS; do
  declare -F "wl_$wl" >/dev/null || die "unknown workload $wl"
  fresh_var="FRESH_$wl"; fresh="${!fresh_var:-0}"
  log "workload $wl"
  for t in $TARGETS; do
    # cec's write-back mode only changes writes.
    if [ "$t" = cecwb ] && ! [[ " $WRITE_WORKLOADS " == *" $wl "* ]]; then continue; fi
    for r in $(seq 1 "$REPEATS"); do
      if [ "$t" != http ] && { [ "$fresh" = 1 ] || [ -z "$DAEMON_PID" ]; }; then
        unmount_target
        if ! mount_target "$t"; then echo "   $t: mount failed (see above)" >&2; fail "$wl" "$t" "$r"; continue; fi
      fi
      # (in an || list: a failing step inside a workload never aborts the whole run)
      "wl_$wl" "$t" "$r" || echo "   $wl $t run $r: the workload script failed" >&2
    done
    unmount_target
  done
  write_table
done
STATUS="complete"
write_table
cat "$RESULTS"
