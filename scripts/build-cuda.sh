#!/usr/bin/env bash
# Builds a CUDA-enabled privxray binary on a machine that has no GPU and no CUDA toolkit,
# from NVIDIA's CUDA 13.0 wheels on PyPI. Carry the result to the GPU machine, which needs the
# driver (libcuda) and the runtime libraries (libcudart, libcublas/Lt, libcurand) of the same
# major version; PyTorch's CUDA 13 wheels provide them.
#
#   scripts/build-cuda.sh            # -> target/cuda/release/privxray with --features cuda
#   scripts/build-cuda.sh ARGS...    # cargo ARGS... in the same environment
#
# Knobs: CUDA_COMPUTE_CAP (default 90: H100/H200, so nvidia-smi is not needed at build time),
# CUDA_WHEELS (default target/cuda-wheels), PYTHON (default python3).
# The default build (cargo build --release) needs none of this.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
py=${PYTHON:-python3}
wheels=${CUDA_WHEELS:-$root/target/cuda-wheels}
toolkit=$root/target/cuda-toolkit
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}

if [ ! -x "$wheels/nvidia/cu13/bin/nvcc" ] && [ -z "$(find "$wheels" -name nvcc -type f 2>/dev/null | head -1)" ]; then
  "$py" -m pip install --quiet --target "$wheels" \
    "nvidia-cuda-nvcc==13.0.*" "nvidia-nvvm==13.0.*" "nvidia-cuda-crt==13.0.*" \
    "nvidia-cuda-runtime==13.0.*" "nvidia-cuda-cccl==13.0.*" "nvidia-cuda-nvrtc==13.0.*" \
    "nvidia-cublas==13.*" "nvidia-curand"
fi

# One tree with bin/, include/ and lib/, made of links into the wheels, as cudarc and nvcc expect.
rm -rf "$toolkit"
mkdir -p "$toolkit/bin" "$toolkit/include" "$toolkit/lib64" "$toolkit/nvvm"
for sub in bin include lib; do
  while IFS= read -r -d '' d; do
    dest=$toolkit/$sub
    [ "$sub" = lib ] && dest=$toolkit/lib64
    cp -rsn "$d"/. "$dest"/ 2>/dev/null || true
  done < <(find "$wheels/nvidia" -mindepth 1 -maxdepth 3 -type d -name "$sub" -print0)
done
nvvm=$(find "$wheels/nvidia" -maxdepth 3 -type d -name nvvm | head -1)
[ -n "$nvvm" ] && cp -rsn "$nvvm"/. "$toolkit/nvvm"/
# Unversioned .so names for the linker.
for lib in "$toolkit"/lib64/lib*.so.*; do
  base=${lib%%.so.*}.so
  [ -e "$base" ] || ln -s "$(basename "$lib")" "$base"
done
export CUDA_HOME=$toolkit CUDA_PATH=$toolkit PATH=$toolkit/bin:$PATH
export LD_LIBRARY_PATH=$toolkit/lib64:${LD_LIBRARY_PATH:-}
nvcc_version=$("$toolkit/bin/nvcc" --version | sed -n 's/.*release \([0-9]*\)\.\([0-9]*\).*/\1\2/p')
# cudarc does not know the newest nvcc versions by name; tell it which API to bind.
export CUDARC_CUDA_VERSION=${CUDARC_CUDA_VERSION:-${nvcc_version}00}

# candle links libcuda (the driver) directly. A GPU-less machine has none: link against a stub
# that defines every driver symbol cudarc declares. The stub lives in target/ and never ships;
# at run time the real driver's libcuda.so.1 is loaded instead.
cargo fetch --quiet
cudarc=$(find "${CARGO_HOME:-$HOME/.cargo}/registry/src" -mindepth 2 -maxdepth 2 -type d -name 'cudarc-*' | sort -V | tail -1)
stub=$root/target/cuda-stub
mkdir -p "$stub"
grep -rhoE 'pub (unsafe )?fn (cu[A-Z][A-Za-z0-9_]*)' "$cudarc/src/driver/sys" \
  | sed -E 's/.*fn //' | sort -u | sed 's/.*/int &(void) { return 999; }/' > "$stub/libcuda.c"
# The soname makes the binary ask for libcuda.so.1, the name the driver installs.
cc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$stub/libcuda.so" "$stub/libcuda.c"
ln -sf libcuda.so "$stub/libcuda.so.1"
export RUSTFLAGS="${RUSTFLAGS:-} -L native=$stub -L native=$toolkit/lib64"

# Its own target folder: the stub link flags would otherwise invalidate the CPU build's cache.
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$root/target/cuda}
if [ $# -gt 0 ]; then
  # Any other cargo command in the same environment, e.g. a CUDA test binary:
  #   scripts/build-cuda.sh test --release --features cuda -p privxray --lib --no-run
  cargo "$@"
  exit
fi
cargo build --release --features cuda -p privxray-ui
echo "built $CARGO_TARGET_DIR/release/privxray with CUDA (compute capability $CUDA_COMPUTE_CAP)"
echo "on the GPU machine: LD_LIBRARY_PATH=<dir with libcudart.so.13, libcublas*.so.13, libcurand.so.10> privxray train --device cuda ..."
