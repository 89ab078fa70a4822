#!/usr/bin/env bash
# Regenerates screenshots/{data,train,privacy,predict,demo}.png from the real binary: runs
# `privxray` in a private tmux server at 160x45 in a scratch folder (a small SYNTHETIC set plus
# the bundled real samples), visits each tab in a representative state, captures the pane with
# its ANSI colours and renders it with examples/ansi_png.rs (DejaVu Sans Mono).
#
# Usage: scripts/screenshots.sh [OUT_DIR]   (default: screenshots/). Needs tmux. ~1-2 minutes.
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
"$bin" synth --out "$work/data/synthetic" --count 400 --seed 1 >/dev/null

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
start "'$bin'"
wait_for "press Enter to preprocess" 20
keys Enter
wait_for "done:" 60
shot data

# Three runs of dnn-av, 5 epochs each: without DP, then DP-SGD at sigma 1.1 and 2.0, so the
# Privacy tab has the no-DP point and two DP points.
keys 2 j - - - - -
wait_for "epochs        5 " 5
keys j j j Space s
wait_for "state   finished" 300
keys Space j s
sleep 3
wait_for "state   finished" 300
keys + + + + + + + + + + + + + + + + + +
keys s
sleep 3
wait_for "state   finished" 300
shot train

keys 3 a
wait_for "AUC" 120
keys k a
sleep 2
keys k a
sleep 2
until [ "$(tm capture-pane -p -t shots | grep -cF "AUC 0")" -ge 3 ]; do sleep 0.3; done
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
start "'$bin' demo"
wait_for "2/4 Train" 120
sleep 4
shot demo
keys Escape q
