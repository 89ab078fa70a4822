#!/usr/bin/env bash
# The GPU checks of one device session, in order of importance, each under its own time limit so
# one slow step cannot starve the rest. Needs a binary built by scripts/build-cuda.sh and a
# machine with an NVIDIA driver and CUDA 13 runtime libraries (PyTorch's cu13 wheels have them).
#
#   scripts/gpu-check.sh BINARY OUTDIR [STEP...]     (default: every step)
#
# 1. CUDA and CPU train dnn-max on the same seed and data: the step losses must agree.
# 2. The same for DP-SGD (fixed, insecure noise seed so both draw the same noise).
# 3. `bench train --cuda`: plain and DP-SGD images/s on the GPU.
# 4. Side by side on the same two CPU cores: `bench train` and PyTorch/Opacus
#    (scripts/pytorch_reference.py) on the same model and protocol.
# 5. One epoch of the full-size dataset shape (5,216 training images) for dnn-max and vgg16-2.
set -u
bin=$(realpath "$1")
out=$2
mkdir -p "$out"
here=$(cd "$(dirname "$0")" && pwd)
work=${WORK:-/tmp/privxray-gpu}
mkdir -p "$work"
cd "$work"
shift 2
only=" $* "
want() { [ "$only" = "  " ] || [[ "$only" == *" $1 "* ]]; }
step() { echo; echo "== $* ($(date +%T))"; }

# PyTorch's CUDA libraries (libcudart, libcublas, libcurand) for the carried binary.
libdirs=$(python3 -c "
import glob, os, site
ds = set()
for sp in site.getsitepackages():
    ds.update(glob.glob(os.path.join(sp, 'nvidia', '*', 'lib')))
print(':'.join(sorted(ds)))")
# A binary linked against an unversioned stub asks for libcuda.so: point that name at the driver.
mkdir -p "$work/lib"
drv=$(ldconfig -p | awk '/libcuda\.so\.1 /{print $NF; exit}')
[ -z "$drv" ] && drv=$(find /usr/local/nvidia /usr/lib /usr/lib64 -name 'libcuda.so.1' 2>/dev/null | head -1)
[ -n "$drv" ] && ln -sf "$drv" "$work/lib/libcuda.so"
export LD_LIBRARY_PATH=$work/lib:$libdirs:${LD_LIBRARY_PATH:-}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
ldd "$bin" | grep -E 'not found|libcu' || true

if want 1; then
step "1. dnn-max, CPU vs CUDA, same seed"
timeout 120 "$bin" synth --out s2k --count 2000 --seed 1
for d in cpu cuda; do
  timeout 120 "$bin" train --data s2k --model dnn-max --epochs 2 --seed 1 --patience 0 \
    --device $d --checkpoint-dir ck-$d --metrics "$out/cmp-$d.jsonl" --json | tail -1
done

grep -h '"started"' "$out"/cmp-*.jsonl | cut -c1-200
fi
if want 2; then
step "2. DP-SGD dnn-max, CPU vs CUDA, same seeds"
for d in cpu cuda; do
  timeout 120 "$bin" train --data s2k --model dnn-max --epochs 1 --seed 1 --patience 0 --dp \
    --insecure-noise-seed 7 --device $d --checkpoint-dir ckdp-$d \
    --metrics "$out/cmpdp-$d.jsonl" --json | tail -1
done
python3 - "$out" <<'EOF'
import json, sys
out = sys.argv[1]
for tag in ("cmp", "cmpdp"):
    runs = {}
    for d in ("cpu", "cuda"):
        try:
            runs[d] = [json.loads(l) for l in open(f"{out}/{tag}-{d}.jsonl")]
        except OSError:
            runs[d] = []
    steps = {d: [e["loss"] for e in r if e["event"] == "step"] for d, r in runs.items()}
    n = min(len(steps["cpu"]), len(steps["cuda"]))
    if n == 0:
        print(tag, "no steps to compare"); continue
    diff = [abs(a - b) for a, b in zip(steps["cpu"][:n], steps["cuda"][:n])]
    rel = max(d / max(abs(a), 1e-6) for d, a in zip(diff, steps["cpu"]))
    ep = {d: [(round(e["val_acc"], 4), round(e["seconds"], 1)) for e in r if e["event"] == "epoch"] for d, r in runs.items()}
    print(f"{tag}: {n} steps, max |loss diff| {max(diff):.2e}, max relative {rel:.2e}; "
          f"first losses cpu {steps['cpu'][:3]} cuda {steps['cuda'][:3]}; "
          f"last cpu {steps['cpu'][n-1]:.5f} cuda {steps['cuda'][n-1]:.5f}; epochs (val acc, s) {ep}")
EOF
fi
if want 3; then
step "3. bench train on the GPU"
timeout 120 "$bin" bench train --cuda --steps 10 --json | tee "$out/bench-cuda.json"
fi
if want 4; then
step "4. CPU side by side on cores 0,1 (ours, PyTorch/Opacus, ours again)"
timeout 90 taskset -c 0,1 env RAYON_NUM_THREADS=2 "$bin" bench train --json | tee "$out/bench-cpu-ours-1.json"
timeout 150 taskset -c 0,1 python3 "$here/pytorch_reference.py" --threads 2 --json | tee "$out/bench-cpu-torch.json"
timeout 90 taskset -c 0,1 env RAYON_NUM_THREADS=2 "$bin" bench train --json | tee "$out/bench-cpu-ours-2.json"
fi
if want 5; then
step "5. one epoch of the full-size shape (5,216 training images)"
timeout 120 "$bin" synth --out full --count 6520 --seed 2
for m in dnn-max vgg16-2; do
  # GPU memory once a second beside the step events, to tell a leak from a peak.
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 1000 > "$out/mem-$m.txt" &
  smi=$!
  timeout 240 "$bin" train --data full --model $m --epochs 1 --seed 1 --patience 0 \
    --device cuda --checkpoint-dir ckf --metrics "$out/full-$m.jsonl" --json 2>&1 | tail -3
  kill $smi
  grep -E '"event":"(started|epoch)"' "$out/full-$m.jsonl" | cut -c1-400
  grep -c '"event":"step"' "$out/full-$m.jsonl"
  echo "GPU MiB used, once a second: $(tr '\n' ' ' < "$out/mem-$m.txt" | cut -c1-1500)"
done
fi
step done
