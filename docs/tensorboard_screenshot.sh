#!/usr/bin/env bash
# docs/tensorboard.png: TensorBoard showing a smoke sweep's curves and pictures, as README shows it.
#
# Runs a small sweep (hg1 and hg2, five epochs at smoke scale, 64 px input) into a scratch folder, starts a real
# `tensorboard` over the sweep's event folders on 127.0.0.1, and takes the screenshot with headless Chromium
# (`apt-get install -y chromium`). Not part of `make test`; every process it starts is stopped by its PID.
#
#   docs/tensorboard_screenshot.sh [OUT.png [WORK]]   (default docs/tensorboard.png; a few minutes on 2 idle cores)
#
# WORK keeps the sweep's records and event folders (default: a temp folder, removed); the same sweep again finds its
# runs finished there and skips them, so a second shot of the same sweep takes seconds.
set -euo pipefail

cd "$(dirname "$0")/.."
out="${1:-docs/tensorboard.png}"
bin=.venv/bin
scratch="$(mktemp -d)"
work="${2:-$scratch}"
board_pid=""
cleanup() {
    if [ -n "$board_pid" ]; then kill "$board_pid" 2>/dev/null || true; fi
    rm -rf "$scratch"
}
trap cleanup EXIT

"$bin/hgbench" sweep --cases hg1,hg2 --smoke --epochs 5 --input-res 64 --quiet \
    --out "$work/results" --checkpoint-dir "$work/runs"

port="$("$bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
"$bin/tensorboard" --logdir "$work/runs/tensorboard" --host 127.0.0.1 --port "$port" \
    >"$scratch/tensorboard.log" 2>&1 &
board_pid=$!
# Until TensorBoard has read both runs' pictures (it loads event files in the background after it answers).
for _ in $(seq 1 240); do
    if "$bin/python" - "$port" 2>/dev/null <<'PY'
import json, sys, urllib.request
tags = json.load(urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/data/plugin/images/tags", timeout=5))
sys.exit(0 if len(tags) >= 2 and all("pictures/val_0" in t for t in tags.values()) else 1)
PY
    then break; fi
    sleep 0.5
done
sleep 5

# The time series view, filtered to the loss and PCKh curves and the pictures; virtual time lets its scripts finish.
# forceSVG: TensorBoard draws its charts with WebGL, which headless Chromium renders blank; SVG draws the same curves.
url="http://127.0.0.1:$port/?forceSVG=true&tagFilter=loss%2Ftrain%7Cpckh_no_flip%2FMean%7Cpictures%2Fval_0#timeseries"
chromium --headless --no-sandbox --disable-gpu --disable-background-networking --disable-component-update \
    --disable-sync --no-first-run --user-data-dir="$scratch/chromium" --hide-scrollbars --enable-unsafe-swiftshader \
    --window-size=1500,1000 --virtual-time-budget=120000 --screenshot="$scratch/shot.png" "$url"
cp "$scratch/shot.png" "$out"
echo "wrote $out"
