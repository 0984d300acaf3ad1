#!/usr/bin/env bash
# bench/bigfolder.sh: one folder of N files (100,000 by default) on cells-emu, and what listing it
# costs: through the mount (`ls -l` cold, then warm, and the daemon's peak RSS), with `cec ls`
# (time and peak RSS), and with curl for the same requests (the denominator). Issue 27.
#
#   sudo bench/bigfolder.sh                      # release build of this tree, 100,000 files
#   sudo BIGFOLDER_N=10000 bench/bigfolder.sh    # another size
#   sudo BIGFOLDER_BIN=/var/tmp/cec-before BIGFOLDER_LABEL=before bench/bigfolder.sh
#
# What it does:
#   1. builds cec and cells-emu in release mode (unless BIGFOLDER_BIN names a folder holding both);
#   2. starts cells-emu on 127.0.0.1 with a data directory (BIGFOLDER_DATA, default
#      /var/tmp/cec-bigfolder-N: kept between runs, so the folder is seeded once), mints a
#      Personal Access Token for user `bench`, and seeds `scratch/big` with N empty files through
#      the S3 gateway (one curl, 16 PUTs at once) unless the data directory already holds them;
#   3. raw cost with curl: the REST listing in pages of 1,000 (in series on one connection, and
#      4 at once as cec asks them), one unpaged REST listing, and the gateway's one-level listing
#      (which the mount asks beside the REST pages, to see dotfiles);
#   4. `cec mount` (foreground daemon, fresh cache directory): `ls -l` of the folder cold (first
#      listing after the mount), the daemon's VmHWM, then `ls -l` warm and VmHWM again;
#   5. `cec ls cells://scratch/big` under /usr/bin/time -v: elapsed time and maximum RSS
#      (BIGFOLDER_SKIP_LS=1 skips it).
# Results are appended to bench/results/bigfolder-<N/1000>k.md (BIGFOLDER_RESULTS), one section
# per run, labelled with BIGFOLDER_LABEL and the commit. It removes its mount and stops every
# process it started on exit, failure or Ctrl-C. Needs root, /dev/fuse, curl, python3.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
N="${BIGFOLDER_N:-100000}"
LABEL="${BIGFOLDER_LABEL:-$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)}"
DATA="${BIGFOLDER_DATA:-/var/tmp/cec-bigfolder-$N}"
RESULTS="${BIGFOLDER_RESULTS:-$ROOT/bench/results/bigfolder-$((N / 1000))k.md}"
TIMEOUT="${BIGFOLDER_TIMEOUT:-900}"
FOLDER=scratch/big

log() { echo "== $*" >&2; }
die() { echo "bigfolder: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "run as root (FUSE mount)"
[ -e /dev/fuse ] || die "/dev/fuse is missing"
for c in curl python3 findmnt /usr/bin/time; do command -v "$c" >/dev/null || die "$c is missing"; done

if [ -n "${BIGFOLDER_BIN:-}" ]; then
  BIN="$BIGFOLDER_BIN"
else
  log "building cec and cells-emu (release)"
  (cd "$ROOT" && nice -n 19 cargo build --release -q -p cec --bin cec -p cells-emu --bin cells-emu) \
    || die "build failed"
  BIN="$ROOT/target/release"
fi
CEC="$BIN/cec" EMU="$BIN/cells-emu"
[ -x "$CEC" ] && [ -x "$EMU" ] || die "no cec or cells-emu in $BIN"

WORK="$(mktemp -d /var/tmp/cec-bigfolder-run.XXXXXX)"
EMU_PID="" DAEMON_PID="" MP="$WORK/mnt"
mkdir -p "$MP" "$WORK/cache" "$DATA"
stop_pid() {
  local pid=$1
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null || true
}
cleanup() {
  set +e
  findmnt -n "$MP" >/dev/null 2>&1 && { umount "$MP" 2>/dev/null || umount -l "$MP"; }
  [ -n "$DAEMON_PID" ] && stop_pid "$DAEMON_PID"
  [ -n "$EMU_PID" ] && stop_pid "$EMU_PID"
  findmnt -n "$MP" >/dev/null 2>&1 || rm -rf --one-file-system "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP PIPE

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()')
URL="http://127.0.0.1:$PORT"
start_emu() {
  : >"$WORK/emu.log"
  "$EMU" serve --data "$DATA" --listen "127.0.0.1:$PORT" --user bench:bench-password \
    >>"$WORK/emu.log" 2>&1 &
  EMU_PID=$!
  for _ in $(seq 1 300); do
    grep -q "listening on" "$WORK/emu.log" 2>/dev/null && return 0
    sleep 0.1
  done
  cat "$WORK/emu.log" >&2; die "cells-emu did not start"
}
start_emu
stop_pid "$EMU_PID"   # the user exists once the emulator has run: mint a PAT, start again
TOKEN=$("$EMU" admin user token -u bench -e 12h --data "$DATA")
start_emu
export CEC_URL="$URL" CEC_TOKEN="$TOKEN" CEC_CONFIG="$WORK/cec-config" CEC_SKIP_KEYRING=true
(umask 077 && printf 'user = "%s:gatewaysecret"\n' "$TOKEN" >"$WORK/s3.cfg" \
  && printf 'header = "Authorization: Bearer %s"\n' "$TOKEN" >"$WORK/rest.cfg")
s3curl() { curl -s -K "$WORK/s3.cfg" --aws-sigv4 "aws:amz:us-east-1:s3" -H "x-amz-content-sha256: UNSIGNED-PAYLOAD" "$@"; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'; }
hwm_mib() { awk '/^VmHWM/ { printf "%.1f", $2 / 1024 }' "/proc/$1/status"; }
S3_LIST="$URL/io?delimiter=%2F&list-type=2&max-keys=1000000&prefix=$(printf '%s/' "$FOLDER" | sed 's|/|%2F|g')"
count_s3() { { s3curl "$S3_LIST" || true; } | { grep -o '<Key>' || true; } | wc -l; }

# ---------------------------------------------------------------- the folder
have=$(count_s3)
if [ "$have" -lt "$N" ]; then
  log "seeding $FOLDER with $N empty files (has $have)"
  : >"$WORK/empty"
  python3 - "$N" "$URL/io/$FOLDER" "$WORK/empty" >"$WORK/seed.cfg" <<'EOF'
import sys
n, base, empty = int(sys.argv[1]), sys.argv[2], sys.argv[3]
for i in range(n):
    print(f'url = "{base}/file-{i:07d}.txt"\nupload-file = "{empty}"\noutput = "/dev/null"')
EOF
  t0=$(now)
  s3curl --no-progress-meter --parallel --parallel-max 16 -K "$WORK/seed.cfg" || die "seeding failed"
  log "seeded in $(since "$t0") s"
  have=$(count_s3)
  [ "$have" -ge "$N" ] || die "the folder holds $have files, not $N"
fi

# ---------------------------------------------------------------- raw HTTP
log "raw HTTP cost of the same listing"
# One block per page, each with its own header (curl's `next` starts every option afresh).
(umask 077 && TOKEN="$TOKEN" python3 - "$N" "$URL" "$FOLDER" >"$WORK/pages.cfg" <<'EOF'
import json, os, sys
n, url, folder = int(sys.argv[1]), sys.argv[2], sys.argv[3]
auth = json.dumps("Authorization: Bearer " + os.environ["TOKEN"])
pages = [json.dumps({"NodePaths": [folder + "/*"], "Limit": 1000, "Offset": o}) for o in range(0, n + 1, 1000)]
print("\nnext\n".join(
    f'url = "{url}/a/meta/bulk/get"\ndata = {json.dumps(p)}\noutput = "/dev/null"\n'
    f'header = "Content-Type: application/json"\nheader = {auth}\nwrite-out = "%{{http_code}} %{{size_download}}\\n"'
    for p in pages))
EOF
)
PAGES=$(( N / 1000 + 1 ))
# Every page answered 200: prints the MiB of all pages.
pages_ok() { awk -v n="$PAGES" '$1 == 200 { ok++; b += $2 } END { if (ok != n) { print "bigfolder: " ok " of " n " pages answered 200" > "/dev/stderr"; exit 1 } printf "%.0f", b / 1048576 }'; }
t0=$(now); curl -s -K "$WORK/pages.cfg" >"$WORK/pages.out"; RAW_PAGES=$(since "$t0")
PAGES_MIB=$(pages_ok <"$WORK/pages.out") || die "REST pages failed"
t0=$(now); curl -s --no-progress-meter --parallel --parallel-max 4 -K "$WORK/pages.cfg" >"$WORK/pages.out"; RAW_PAGES4=$(since "$t0")
pages_ok <"$WORK/pages.out" >/dev/null || die "REST pages (4 at once) failed"
rest() { curl -s -f -K "$WORK/rest.cfg" "$@"; }
t0=$(now)
rest -o "$WORK/unpaged.json" -H 'Content-Type: application/json' \
  -d "{\"NodePaths\": [\"$FOLDER/*\"]}" "$URL/a/meta/bulk/get" || die "unpaged REST listing failed"
RAW_UNPAGED=$(since "$t0"); UNPAGED_MIB=$(du -m "$WORK/unpaged.json" | cut -f1)
t0=$(now); s3curl -f -o "$WORK/s3.xml" "$S3_LIST" || die "S3 listing failed"; RAW_S3=$(since "$t0")
S3_MIB=$(du -m "$WORK/s3.xml" | cut -f1)
rm -f "$WORK/unpaged.json" "$WORK/s3.xml"

# ---------------------------------------------------------------- the mount
log "cec mount: ls -l cold, then warm"
# BIGFOLDER_WRAP: a command to run the daemon under (a heap profiler: `heaptrack -o FILE`); the
# memory rows are then the wrapper's, not the daemon's.
${BIGFOLDER_WRAP:-} "$CEC" mount "$MP" --cache-dir "$WORK/cache" >"$WORK/mount.log" 2>&1 &
DAEMON_PID=$!
for _ in $(seq 1 300); do
  kill -0 "$DAEMON_PID" 2>/dev/null || { cat "$WORK/mount.log" >&2; die "the mount stopped"; }
  findmnt -n "$MP" >/dev/null 2>&1 && timeout 10 stat "$MP/scratch" >/dev/null 2>&1 && break
  sleep 0.1
done
HWM_START=$(hwm_mib "$DAEMON_PID")
t0=$(now); lines=$(timeout "$TIMEOUT" ls -l "$MP/$FOLDER" | wc -l); COLD=$(since "$t0")
[ "$lines" -ge "$N" ] || die "ls -l listed $lines lines, not $N"
HWM_COLD=$(hwm_mib "$DAEMON_PID")
t0=$(now); timeout "$TIMEOUT" ls -l "$MP/$FOLDER" >/dev/null; WARM=$(since "$t0")
HWM_WARM=$(hwm_mib "$DAEMON_PID")
umount "$MP" 2>/dev/null || true
stop_pid "$DAEMON_PID"; DAEMON_PID=""

# ---------------------------------------------------------------- cec ls
LS_TIME=- LS_RSS=- LS_LINES=0
[ "${BIGFOLDER_SKIP_LS:-0}" = 1 ] || {
log "cec ls"
/usr/bin/time -v -o "$WORK/time.txt" "$CEC" ls "cells://$FOLDER" >"$WORK/ls.out" 2>"$WORK/ls.err" \
  || { cat "$WORK/ls.err" >&2; die "cec ls failed"; }
LS_LINES=$(wc -l <"$WORK/ls.out")
LS_TIME=$(awk -F': ' '/Elapsed \(wall clock\)/ { n = split($2, p, ":"); s = 0; for (i = 1; i <= n; i++) s = s * 60 + p[i]; printf "%.2f", s }' "$WORK/time.txt")
LS_RSS=$(awk -F': ' '/Maximum resident set size/ { printf "%.1f", $2 / 1024 }' "$WORK/time.txt")
}

# ---------------------------------------------------------------- results
mkdir -p "$(dirname "$RESULTS")"
[ -s "$RESULTS" ] || cat >"$RESULTS" <<EOF
# One folder of $N files: listing it (bench/bigfolder.sh, issue 27)

Each section is one run of \`bench/bigfolder.sh\` on cells-emu at 127.0.0.1 (release builds,
empty files named \`file-NNNNNNN.txt\` in \`$FOLDER\`). Raw rows are curl on the same emulator in
the same run: REST \`/a/meta/bulk/get\` pages of 1,000 (in series on one connection, and 4 at
once as cec asks them), one unpaged REST request, the gateway's one-level ListObjectsV2 (the
mount asks it beside the REST pages to see dotfiles). VmHWM is the mount daemon's peak RSS
since it started; \`cec ls\` is measured with \`/usr/bin/time -v\`.
EOF
{
  echo
  echo "## $LABEL ($(date -u +%Y-%m-%d), $N files, binaries: \`$BIN\`)"
  echo
  echo "| what | time | memory |"
  echo "|---|---|---|"
  echo "| raw: REST pages of 1,000, in series | ${RAW_PAGES} s | ${PAGES_MIB} MiB of JSON |"
  echo "| raw: REST pages of 1,000, 4 at once | ${RAW_PAGES4} s | |"
  echo "| raw: one unpaged REST listing | ${RAW_UNPAGED} s | ${UNPAGED_MIB} MiB of JSON |"
  echo "| raw: gateway one-level listing | ${RAW_S3} s | ${S3_MIB} MiB of XML |"
  echo "| mount: daemon after start | | VmHWM ${HWM_START} MiB |"
  echo "| mount: \`ls -l\` cold | ${COLD} s | VmHWM ${HWM_COLD} MiB |"
  echo "| mount: \`ls -l\` warm | ${WARM} s | VmHWM ${HWM_WARM} MiB |"
  if [ "$LS_TIME" = - ]; then echo "| \`cec ls\` | not run (BIGFOLDER_SKIP_LS) | |"
  else echo "| \`cec ls\` ($LS_LINES lines) | ${LS_TIME} s | max RSS ${LS_RSS} MiB |"; fi
} | tee -a "$RESULTS"
