#!/usr/bin/env bash
# Membership-inference audit of a deliberately overfitted model against a DP-SGD model.
#
#   scripts/audit-demo.sh [WORKDIR]        (about 10 minutes on 2 cores)
#
# A model that memorises its training set is the worst case for privacy; the clearest way to
# get one is random labels (Zhang et al. 2017): nothing about an image predicts its label, so
# the model can only fit the training set by remembering each example. Test and validation
# images get random labels too, so members and non-members come from the same distribution
# and any gap in the attack's AUC is memorisation. Both models train for 150 epochs on the
# same 144 images; the DP one with sigma 1 and C 1 (its epsilon is large: 150 epochs over 144
# images at q = 0.22).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work=${1:-$root/data/audit-demo}
bin=${PRIVXRAY:-$root/target/release/privxray}
[ -x "$bin" ] || (cd "$root" && cargo build --release)
rm -rf "$work"
mkdir -p "$work"
"$bin" synth --out "$work/data" --count 200 --seed 6
# Random labels: each image moves to the other class folder with probability 1/2.
RANDOM=7
for split in train test val; do
  mapfile -t files < <(find "$work/data/$split" -type f | sort)
  for f in "${files[@]}"; do
    [ $((RANDOM % 2)) = 1 ] || continue
    other=PNEUMONIA
    [ "$(basename "$(dirname "$f")")" = PNEUMONIA ] && other=NORMAL
    mkdir -p "$work/data/$split/$other"
    mv "$f" "$work/data/$split/$other/"
  done
done
"$bin" train --data "$work/data" --model dnn-max --epochs 150 --seed 1 --patience 0 \
  --checkpoint-dir "$work/plain" >/dev/null 2>&1
"$bin" train --data "$work/data" --model dnn-max --epochs 150 --seed 1 --patience 0 --dp \
  --noise-multiplier 1 --clip-norm 1 --checkpoint-dir "$work/dp" >/dev/null 2>&1
for m in plain dp; do
  echo "$m: $("$bin" audit --model "$work/$m/dnn-max-last.safetensors" --data "$work/data" --json | tr -d ' \n')"
done
