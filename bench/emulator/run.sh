#!/usr/bin/env bash
# Emulator S3 gateway vs nginx: GET and PUT throughput of one 1 GiB file on loopback.
#
# What it does, in one run:
#   1. builds cells-emu in release mode;
#   2. creates a 1 GiB random file in a temporary directory (page-cached: this measures the
#      HTTP serving path, not the disk);
#   3. starts nginx (Debian `nginx-light`, a temporary config: loopback, sendfile, WebDAV PUT)
#      serving that directory, and cells-emu serving a fresh data directory with a PAT for
#      user `bench`; uploads the file to the emulator once;
#   4. measures, RUNS times each (default 5), with curl writing to /dev/null:
#        - GET  nginx       `curl http://127.0.0.1:PORT/big.bin`
#        - GET  emulator    `curl --aws-sigv4 aws:amz:us-east-1:s3 .../io/personal-files/big.bin`
#        - PUT  nginx       `curl -T big.bin` (WebDAV PUT, written to disk by nginx)
#        - PUT  emulator    `curl -T big.bin --aws-sigv4 ...` (UNSIGNED-PAYLOAD)
#      and takes the median of each;
#   5. writes a Markdown table to bench/results/emulator.md (and prints it).
#
# Usage: bench/emulator/run.sh [RUNS]      (env SIZE_MIB=1024 to change the file size)
# Needs: curl, nginx (Debian nginx-light), cargo. Everything runs on 127.0.0.1; every process
# started here is stopped on exit.
set -euo pipefail

RUNS="${1:-5}"
SIZE_MIB="${SIZE_MIB:-1024}"
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
RESULTS="$ROOT/bench/results/emulator.md"
WORK="$(mktemp -d /tmp/cells-emu-bench.XXXXXX)"
EMU_PID=""
NGINX_PID=""

cleanup() {
  [ -n "$EMU_PID" ] && kill "$EMU_PID" 2>/dev/null && wait "$EMU_PID" 2>/dev/null || true
  [ -n "$NGINX_PID" ] && kill "$NGINX_PID" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

median() { sort -g | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }

echo "== building cells-emu (release)"
(cd "$ROOT" && cargo build --release -p cells-emu --bin cells-emu >/dev/null)
EMU_BIN="$ROOT/target/release/cells-emu"

echo "== creating a ${SIZE_MIB} MiB file"
mkdir -p "$WORK/www" "$WORK/nginx" "$WORK/emu"
head -c "$((SIZE_MIB * 1024 * 1024))" /dev/urandom >"$WORK/www/big.bin"
cat "$WORK/www/big.bin" >/dev/null
SIZE_BYTES=$(stat -c %s "$WORK/www/big.bin")

echo "== starting nginx"
NGINX_PORT=$(free_port)
mkdir -p "$WORK/www/put" "$WORK/nginx/tmp"
NGINX_USER=""
# As root, nginx workers would run as www-data and could not read the private temp dir.
[ "$(id -u)" = 0 ] && NGINX_USER="user root;"
cat >"$WORK/nginx/nginx.conf" <<EOF
$NGINX_USER
worker_processes 1;
daemon off;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log;
events { worker_connections 64; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  client_body_temp_path $WORK/nginx/tmp;
  client_max_body_size 0;
  server {
    listen 127.0.0.1:$NGINX_PORT;
    root $WORK/www;
    location /put/ { dav_methods PUT; create_full_put_path on; }
  }
}
EOF
nginx -c "$WORK/nginx/nginx.conf" -p "$WORK/nginx" &
NGINX_PID=$!

echo "== starting cells-emu"
EMU_PORT=$(free_port)
start_emu() {
  "$EMU_BIN" serve --data "$WORK/emu" --listen "127.0.0.1:$EMU_PORT" --user bench:bench-password \
    >"$WORK/emu.log" 2>&1 &
  EMU_PID=$!
  for _ in $(seq 1 100); do
    grep -q "listening on" "$WORK/emu.log" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "cells-emu did not start:"; cat "$WORK/emu.log"; exit 1
}
start_emu
# The user exists once the emulator has run: stop it, mint a PAT, start it again.
kill "$EMU_PID"; wait "$EMU_PID" 2>/dev/null || true
TOKEN=$("$EMU_BIN" admin user token -u bench -e 2h --data "$WORK/emu")
start_emu
for _ in $(seq 1 50); do curl -s -o /dev/null "http://127.0.0.1:$NGINX_PORT/" && break; sleep 0.1; done

EMU_URL="http://127.0.0.1:$EMU_PORT/io/personal-files/big.bin"
NGINX_URL="http://127.0.0.1:$NGINX_PORT/big.bin"
sigv4=(--aws-sigv4 "aws:amz:us-east-1:s3" --user "$TOKEN:gatewaysecret" -H "x-amz-content-sha256: UNSIGNED-PAYLOAD")

# Upload once for the GET runs.
code=$(curl -s -o "$WORK/put.out" -w '%{http_code}' "${sigv4[@]}" -T "$WORK/www/big.bin" "$EMU_URL")
[ "$code" = 200 ] || { echo "initial upload failed ($code):"; cat "$WORK/put.out"; exit 1; }

# speed_download / speed_upload are bytes per second; print MB/s (10^6).
measure() { # label, curl args...
  local label=$1; shift
  local kind=download
  [[ "$label" == PUT* ]] && kind=upload
  local speeds=()
  for _ in $(seq 1 "$RUNS"); do
    local out
    out=$(curl -s -o /dev/null -w "%{http_code} %{speed_$kind}" "$@")
    local code=${out%% *}
    case "$code" in 200|201|204) ;; *) echo "$label: HTTP $code" >&2; exit 1 ;; esac
    speeds+=("$(awk -v s="${out##* }" 'BEGIN { printf "%.0f", s / 1e6 }')")
  done
  local med
  med=$(printf '%s\n' "${speeds[@]}" | median)
  echo "$label runs(MB/s): ${speeds[*]} median: $med" >&2
  echo "$med"
}

echo "== measuring ($RUNS runs each)"
GET_NGINX=$(measure "GET nginx" "$NGINX_URL")
GET_EMU=$(measure "GET emulator" "${sigv4[@]}" "$EMU_URL")
PUT_NGINX=$(measure "PUT nginx" -T "$WORK/www/big.bin" "http://127.0.0.1:$NGINX_PORT/put/big.bin")
PUT_EMU=$(measure "PUT emulator" "${sigv4[@]}" -T "$WORK/www/big.bin" "$EMU_URL")

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.0f%%", 100 * a / b }'; }
mkdir -p "$(dirname "$RESULTS")"
{
  echo "# cells-emu S3 gateway vs nginx (loopback, ${SIZE_MIB} MiB file, median of $RUNS curl runs)"
  echo
  echo "Measured $(date -u +%Y-%m-%dT%H:%MZ) on $(nproc) cores, $(uname -sr); file in the page cache."
  echo "Produced by \`bench/emulator/run.sh\`."
  echo
  echo "| operation | nginx MB/s | cells-emu MB/s | cells-emu / nginx |"
  echo "|---|---:|---:|---:|"
  echo "| GET | $GET_NGINX | $GET_EMU | $(ratio "$GET_EMU" "$GET_NGINX") |"
  echo "| PUT | $PUT_NGINX | $PUT_EMU | $(ratio "$PUT_EMU" "$PUT_NGINX") |"
  echo
  echo "GET on the emulator is a SigV4-signed S3 GetObject (token as access key); PUT is a signed"
  echo "PutObject with UNSIGNED-PAYLOAD, which the emulator stores durably (temp file, MD5 and"
  echo "x-cells-hash computed while streaming, fsync, rename, index). nginx serves with sendfile and"
  echo "stores PUTs with its WebDAV module. Size: $SIZE_BYTES bytes."
} >"$RESULTS"
cat "$RESULTS"
