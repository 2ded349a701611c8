#!/usr/bin/env bash
# The closing numbers for a family: build a full-size synthetic S0 ctx16 checkpoint with the builder,
# then inspect and convert (core env) and parity --scope all (the original env: it has Meta's sam3),
# each timed with /usr/bin/time (wall seconds, peak RSS). Run it under the full-size lock:
#   flock /tmp/litetext-fullsize.lock scripts/fullsize_family_check.sh sam3p1_litetext /work/fullsize/families
set -euo pipefail
family=${1:-sam3p1_litetext}
work=${2:-/work/fullsize/families}
core=${CORE_PYTHON:-/work/main/.venv/bin/python}
original=${ORIGINAL_PYTHON:-/work/main/.venv-original/bin/python}
export PYTHONPATH="$(cd "$(dirname "$0")/.." && pwd)"
mkdir -p "$work"
ckpt="$work/${family}_s0_ctx16.pt"
out="$work/${family}_s0_ctx16"
tok="$work/tokenizer"
timed() { local name=$1; shift; /usr/bin/time -f "$name: %e s %M KB" -a -o "$work/times.txt" "$@"; }
: > "$work/times.txt"
timed build nice "$core" scripts/build_checkpoint.py --family "$family" --variant s0 --size full --context 16 --out "$ckpt"
"$core" -c "from litetext_convert.reference.synthetic_vocab import write_hf_clip_tokenizer as w; w('$tok', 16)"
timed inspect nice "$core" -m litetext_convert.cli inspect -c "$ckpt" > "$work/inspect.txt"
timed convert nice "$core" -m litetext_convert.cli convert -c "$ckpt" "$out" --tokenizer "$tok" --force --verify-load > "$work/convert.txt"
timed parity_all nice "$original" -m litetext_convert.cli parity "$out" -c "$ckpt" --scope all --json > "$work/parity.json"
cat "$work/times.txt"
