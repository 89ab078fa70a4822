#!/usr/bin/env bash
# Regenerates screenshots/{data,train,privacy,predict,demo}.png from the real binary: runs
# `privxray` in a private tmux server at 160x45 in a scratch folder (the default SYNTHETIC set
# plus the bundled real samples), visits each tab in a representative state, captures the pane with
# its ANSI colours and renders it with examples/ansi_png.rs (DejaVu Sans Mono).
#
# Usage: scripts/screenshots.sh [OUT_DIR]   (default: screenshots/). Needs tmux. About 15 minutes
# on two cores: the first run and a four-point sweep train for real.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$root/screenshots}
cols=160
rows=45
mkdir -p "$out"
command -v tmux >/dev/null || { echo "screenshots.sh: tmux is required" >&2; exit 1; }

(cd "$root" && cargo build --release -p privxray-ui --bin privxray --example ansi_png)
bin=$root/target/release/privxray
render=$root/target/release/examples/ansi_png

work=$(mktemp -d)
socket=privxray-shots-$$
trap 'tmux -L "$socket" kill-server 2>/dev/null || true; rm -rf "$work"' EXIT

tm() { tmux -L "$socket" "$@"; }

# wait_for TEXT [SECONDS]: until the pane shows TEXT; fails with the screen after the timeout.
wait_for() {
    local text=$1 limit=${2:-60} start=$SECONDS
    until tm capture-pane -p -t shots | grep -qF -- "$text"; do
        if (( SECONDS - start > limit )); then
            echo "screenshots.sh: timed out waiting for '$text'" >&2
            tm capture-pane -p -t shots >&2
            exit 1
        fi
        sleep 0.2
    done
}

keys() {
    for k in "$@"; do
        tm send-keys -t shots "$k"
        sleep 0.06
    done
}

shot() {
    sleep 0.5 # let the last frame land
    tm capture-pane -e -p -t shots >"$work/$1.ans"
    "$render" "$work/$1.ans" "$out/$1.png" "$cols" "$rows"
    echo "wrote $out/$1.png"
}

start() {
    tm new-session -d -s shots -x "$cols" -y "$rows" -c "$work" "$*"
}

# --- the interface ---------------------------------------------------------------------------
# True colour, half blocks (tmux keeps 24-bit colours in its captures; it speaks no kitty).
start "COLORTERM=truecolor PRIVXRAY_GRAPHICS=halfblocks '$bin'"
wait_for "press Enter to preprocess" 20
keys Enter
# The first run generates the default synthetic set (8,000 images) and preprocesses it.
wait_for "done:" 600
shot data

# The first run as a new user makes it: the Train tab's defaults (DP on), the noise slider
# moved up mid-run (epsilon's projection follows), to the end.
keys 2 s
wait_for "epoch   1/" 300
keys j j j j j + + + + + +
wait_for "state   finished" 900
shot train

# The frontier in one key: a sweep over four noise multipliers, then the audit of one run.
keys 3 e
for _ in $(seq 20); do tm send-keys -t shots BSpace; done
tm send-keys -t shots -l "0, 0.5, 1, 3"
keys Enter s
wait_for "sweep done" 2400
keys a
wait_for "AUC" 300
shot privacy

keys 4 L
wait_for "ready" 60
keys m
wait_for "shared among the parties" 60
keys Enter
wait_for "plaintext  " 120
keys j Enter
sleep 1
until ! tm capture-pane -p -t shots | grep -qF "in flight"; do sleep 0.3; done
shot predict
keys q
sleep 1
tm kill-server 2>/dev/null || true

# --- the demo, on its Train step -------------------------------------------------------------
start "COLORTERM=truecolor PRIVXRAY_GRAPHICS=halfblocks '$bin' demo"
wait_for "2/4 Train" 120
sleep 4
shot demo
keys Escape q
