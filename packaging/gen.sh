#!/usr/bin/env bash
# Generate the shell completions and man pages of a release from the command definitions,
# into packaging/completions and packaging/man (where the Debian package takes them).
#
#   cargo build --release && packaging/gen.sh && cargo deb --no-build
#
# CEC_BIN picks another binary (default target/release/cec); the first argument another
# output directory (default: packaging/ beside this script).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cec="${CEC_BIN:-$here/../target/release/cec}"
out="${1:-$here}"
if [ ! -x "$cec" ]; then
  echo "gen.sh: $cec is not built (cargo build --release, or set CEC_BIN)" >&2
  exit 1
fi
mkdir -p "$out/completions" "$out/man"
"$cec" completion bash >"$out/completions/cec.bash"
"$cec" completion zsh >"$out/completions/_cec"
"$cec" completion fish >"$out/completions/cec.fish"
rm -f "$out/man/"*.1
"$cec" doc --format man --out "$out/man" >/dev/null
echo "gen.sh: completions in $out/completions, $(ls "$out/man" | wc -l) man pages in $out/man"
