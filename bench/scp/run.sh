#!/usr/bin/env bash
# `cec scp` against the raw HTTP limit (curl) on the same cells-emu, on loopback.
#
# One run does:
#   1. release builds of `cec` and `cells-emu`;
#   2. a fresh emulator data directory, user `bench` with a Personal Access Token;
#   3. test data: one file of SIZE_MIB MiB (default 1024, random) and a folder of SMALL_COUNT
#      (default 1000) files of SMALL_KIB KiB (default 4);
#   4. RUNS times each (default 3), wall-clock time of:
#        - up, large:   curl PUT (SigV4, UNSIGNED-PAYLOAD)  vs  cec scp (multipart, 3 parts at once)
#        - down, large: curl GET                            vs  cec scp (4 parallel ranged GETs)
#        - up, small:   one curl process, SMALL_COUNT PUTs, 4 at once (--parallel-max 4, kept-alive
#                       connections)  vs  cec scp of the folder (4 files at once)
#        - down, small: the same with GETs  vs  cec scp of the folder
#      and the median of each;
#   5. a Markdown table in bench/results/scp.md (also printed).
#
# Usage: bench/scp/run.sh [RUNS]     env: SIZE_MIB, SMALL_COUNT, SMALL_KIB
# Needs: curl, python3, cargo. Every process started here is stopped on exit.
set -euo pipefail

RUNS="${1:-3}"
SIZE_MIB="${SIZE_MIB:-1024}"
SMALL_COUNT="${SMALL_COUNT:-1000}"
SMALL_KIB="${SMALL_KIB:-4}"
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
RESULTS="$ROOT/bench/results/scp.md"
WORK="$(mktemp -d /tmp/cec-scp-bench.XXXXXX)"
EMU_PID=""

cleanup() {
  if [ -n "$EMU_PID" ]; then kill "$EMU_PID" 2>/dev/null || true; wait "$EMU_PID" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}
median() { sort -g | awk '{v[NR]=$1} END {if (NR%2) print v[(NR+1)/2]; else print (v[NR/2]+v[NR/2+1])/2}'; }
now() { date +%s.%N; }

echo "== release builds"
(cd "$ROOT" && cargo build --release -p cec --bin cec -p cells-emu --bin cells-emu >/dev/null)
CEC="$ROOT/target/release/cec"
EMU="$ROOT/target/release/cells-emu"

echo "== test data"
mkdir -p "$WORK/data/small" "$WORK/emu"
head -c "$((SIZE_MIB * 1024 * 1024))" /dev/urandom >"$WORK/data/big.bin"
python3 - "$WORK/data/small" "$SMALL_COUNT" "$SMALL_KIB" <<'EOF'
import os, sys
d, n, kib = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for i in range(n):
    with open(os.path.join(d, f"f{i:05d}.txt"), "wb") as f:
        f.write(os.urandom(kib * 1024))
EOF
cat "$WORK/data/big.bin" >/dev/null
BIG_BYTES=$(stat -c %s "$WORK/data/big.bin")
SMALL_BYTES=$((SMALL_COUNT * SMALL_KIB * 1024))

echo "== cells-emu"
PORT=$(free_port)
start_emu() {
  "$EMU" serve --data "$WORK/emu" --listen "127.0.0.1:$PORT" --user bench:bench-password \
    --job-delay 10ms >"$WORK/emu.log" 2>&1 &
  EMU_PID=$!
  for _ in $(seq 1 100); do
    grep -q "listening on" "$WORK/emu.log" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "cells-emu did not start:"; cat "$WORK/emu.log"; exit 1
}
start_emu
kill "$EMU_PID"; wait "$EMU_PID" 2>/dev/null || true
TOKEN=$("$EMU" admin user token -u bench -e 4h --data "$WORK/emu")
start_emu
URL="http://127.0.0.1:$PORT"
export CEC_URL="$URL" CEC_TOKEN="$TOKEN"
# curl gets the token through a config file, never on its command line.
SIGV4_CFG="$WORK/sigv4.curlrc"
umask 077
cat >"$SIGV4_CFG" <<EOF
aws-sigv4 = "aws:amz:us-east-1:s3"
user = "$TOKEN:gatewaysecret"
header = "x-amz-content-sha256: UNSIGNED-PAYLOAD"
silent
fail
EOF
umask 022

"$CEC" mkdir -p personal-files/curl personal-files/cec >/dev/null 2>&1

# Config files for one curl process doing all the small transfers on one connection.
UP_CFG="$WORK/up.curlrc"
DOWN_CFG="$WORK/down.curlrc"
: >"$UP_CFG"; : >"$DOWN_CFG"
for f in "$WORK"/data/small/*; do
  n=$(basename "$f")
  printf 'upload-file = "%s"\nurl = "%s/io/personal-files/curl/small/%s"\noutput = "/dev/null"\n' "$f" "$URL" "$n" >>"$UP_CFG"
  printf 'url = "%s/io/personal-files/curl/small/%s"\noutput = "/dev/null"\n' "$URL" "$n" >>"$DOWN_CFG"
done

declare -A T
record() { T["$1"]+="$2 "; }
timeit() { # label, command...
  local label=$1; shift
  local t0 t1
  t0=$(now)
  "$@" >/dev/null 2>"$WORK/last.err" || { echo "$label failed:"; cat "$WORK/last.err"; exit 1; }
  t1=$(now)
  record "$label" "$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')"
}

for r in $(seq 1 "$RUNS"); do
  echo "== run $r/$RUNS"
  timeit "up-large-curl" curl -K "$SIGV4_CFG" -o /dev/null -T "$WORK/data/big.bin" "$URL/io/personal-files/curl/big.bin"
  timeit "up-large-cec" "$CEC" scp -n --force "$WORK/data/big.bin" cells://personal-files/cec
  timeit "down-large-curl" curl -K "$SIGV4_CFG" -o /dev/null "$URL/io/personal-files/curl/big.bin"
  timeit "down-large-curl-file" curl -K "$SIGV4_CFG" -o "$WORK/curl-big.bin" "$URL/io/personal-files/curl/big.bin"
  rm -f "$WORK/curl-big.bin"
  timeit "up-large-cec-single" "$CEC" scp -n --force --multipart-threshold 2048 "$WORK/data/big.bin" cells://personal-files/cec
  rm -rf "$WORK/down"; mkdir -p "$WORK/down"
  timeit "down-large-cec" "$CEC" scp -n cells://personal-files/cec/big.bin "$WORK/down"
  cmp -s "$WORK/down/big.bin" "$WORK/data/big.bin" || { echo "downloaded big.bin differs"; exit 1; }
  rm -rf "$WORK/down"
  timeit "up-small-curl" curl --parallel --parallel-max 4 -K "$SIGV4_CFG" -K "$UP_CFG"
  timeit "up-small-cec" "$CEC" scp -n "$WORK/data/small" "cells://personal-files/cec/run$r/"
  timeit "down-small-curl" curl --parallel --parallel-max 4 -K "$SIGV4_CFG" -K "$DOWN_CFG"
  mkdir -p "$WORK/down"
  timeit "down-small-cec" "$CEC" scp -n "cells://personal-files/cec/run$r/small" "$WORK/down"
  [ "$(ls "$WORK/down/small" | wc -l)" = "$SMALL_COUNT" ] || { echo "small download incomplete"; exit 1; }
  rm -rf "$WORK/down"
done

med() { tr ' ' '\n' <<<"${T[$1]}" | grep -v '^$' | median; }
rate() { awk -v b="$1" -v s="$2" 'BEGIN { printf "%.0f", b / s / 1e6 }'; }
pct() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.0f%%", 100 * b / a }'; }
row() { # label, bytes, curl-label, cec-label, unit
  local c e
  c=$(med "$3"); e=$(med "$4")
  if [ "$5" = rate ]; then
    printf '| %s | %s s (%s MB/s) | %s s (%s MB/s) | %s |\n' "$1" "$c" "$(rate "$2" "$c")" "$e" "$(rate "$2" "$e")" "$(pct "$e" "$c")"
  else
    printf '| %s | %s s (%s files/s) | %s s (%s files/s) | %s |\n' "$1" "$c" "$(awk -v n="$SMALL_COUNT" -v s="$c" 'BEGIN{printf "%.0f", n/s}')" "$e" "$(awk -v n="$SMALL_COUNT" -v s="$e" 'BEGIN{printf "%.0f", n/s}')" "$(pct "$e" "$c")"
  fi
}

mkdir -p "$(dirname "$RESULTS")"
{
  echo "# cec scp vs curl on cells-emu (loopback)"
  echo
  echo "$(date -u +%Y-%m-%dT%H:%M:%SZ), $(nproc) CPUs, median of $RUNS runs; release builds;"
  echo "large = one ${SIZE_MIB} MiB random file; small = ${SMALL_COUNT} files of ${SMALL_KIB} KiB."
  echo "curl: one request per file (small files: one curl process, 4 transfers at once on"
  echo "kept-alive connections). curl writes to /dev/null, cec to real files. cec: defaults (multipart 50 MiB parts x3 above 100 MiB; 4 ranged GETs of"
  echo "16 MiB above 64 MiB; 4 files at once). Speed = cec time relative to curl (100% = same)."
  echo
  echo "| transfer | curl (limit) | cec scp | cec speed vs curl |"
  echo "|---|---|---|---|"
  row "upload, large" "$BIG_BYTES" up-large-curl up-large-cec rate
  row "download, large" "$BIG_BYTES" down-large-curl down-large-cec rate
  row "download, large (curl writing a file)" "$BIG_BYTES" down-large-curl-file down-large-cec rate
  row "upload, large (cec forced to one PUT)" "$BIG_BYTES" up-large-curl up-large-cec-single rate
  row "upload, ${SMALL_COUNT} small" "$SMALL_BYTES" up-small-curl up-small-cec files
  row "download, ${SMALL_COUNT} small" "$SMALL_BYTES" down-small-curl down-small-cec files
} >"$RESULTS"
cat "$RESULTS"
