#!/usr/bin/env bash
# The GPU build of aldea: CTranslate2 compiled with CUDA and cuDNN against NVIDIA's CUDA 13.0 toolkit
# from PyPI wheels (installed here into $ALDEA_CUDA_HOME when missing), in its own target directory
# ($ALDEA_CUDA_TARGET_DIR), so the CPU build and CI are untouched.
#
#   scripts/build-cuda.sh            # builds $ALDEA_CUDA_TARGET_DIR/release/aldea
#   ALDEA_CUDA_ARCHS="8.0;8.6;9.0" scripts/build-cuda.sh
#
# The kernels are machine code (SASS) for the compute capabilities in ALDEA_CUDA_ARCHS (default 9.0:
# sm_90, Hopper, H100/H200) plus PTX of ALDEA_CUDA_PTX (default compute_90), which newer GPUs compile
# at load (ct2rs drops CMake's "+PTX", so the PTX goes through nvcc's NVCC_APPEND_FLAGS; changing
# either after a build needs `cargo clean -p ct2rs` in the CUDA target directory). cuBLAS is
# opened at run time (libcublas.so.13) and cuDNN is linked dynamically (libcudnn.so.9): the machine that
# runs the binary supplies both, with a CUDA 13 driver (LD_LIBRARY_PATH, see scripts/device-check.sh).
# On a machine with no GPU the binary still runs on the CPU (`aldea stt --device auto|cpu`).
# After the build, the script's own smoke test (what stands in for CI, where the toolkit and an hour
# of nvcc do not fit) starts the binary where no GPU is: `aldea --version` must name the CUDA build and
# `--device auto` must fall back to the CPU and transcribe a real-dev recording.
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"

ALDEA_CUDA_HOME="${ALDEA_CUDA_HOME:-$HOME/.cache/aldea/cuda-13.0}"
ALDEA_CUDA_TARGET_DIR="${ALDEA_CUDA_TARGET_DIR:-$HOME/.cache/aldea/target-cuda}"
ALDEA_CUDA_ARCHS="${ALDEA_CUDA_ARCHS:-9.0}"
ALDEA_CUDA_PTX="${ALDEA_CUDA_PTX:-90}"
# The toolkit line the GPU machines run (driver and libraries of CUDA 13, cuDNN 9).
CUDA_WHEELS=(
  nvidia-cuda-nvcc==13.0.88 nvidia-cuda-crt==13.0.88 nvidia-nvvm==13.0.88
  nvidia-cuda-runtime==13.0.96 nvidia-cuda-cccl==13.0.85 nvidia-cublas==13.0.2.14
  nvidia-cudnn-cu13==9.28.1.4 nvidia-curand==10.4.0.35
)

aldea_ensure_system_packages

site="$ALDEA_CUDA_HOME/site"
toolkit="$site/nvidia/cu13"
cudnn="$site/nvidia/cudnn"
if [ "$(cat "$ALDEA_CUDA_HOME/.wheels" 2>/dev/null)" != "${CUDA_WHEELS[*]}" ]; then
  aldea_log "installing the CUDA 13.0 toolkit wheels into $ALDEA_CUDA_HOME"
  rm -rf "$site"
  # pip from a small venv of its own: a fresh machine's python3 may have no pip module.
  [ -x "$ALDEA_CUDA_HOME/pip-venv/bin/pip" ] || python3 -m venv "$ALDEA_CUDA_HOME/pip-venv"
  "$ALDEA_CUDA_HOME/pip-venv/bin/pip" install -q --disable-pip-version-check --no-deps --target "$site" "${CUDA_WHEELS[@]}"
  # The wheels carry versioned sonames only; the linker and CMake look for the plain names.
  for lib in cudart cublas cublasLt; do ln -sf "lib$lib.so.13" "$toolkit/lib/lib$lib.so"; done
  ln -sf libcudnn.so.9 "$cudnn/lib/libcudnn.so"
  echo "${CUDA_WHEELS[*]}" > "$ALDEA_CUDA_HOME/.wheels"
fi
"$toolkit/bin/nvcc" --version | tail -n 2 >&2

export CUDA_TOOLKIT_ROOT_DIR="$toolkit"
export CUDA_ARCH_LIST="$ALDEA_CUDA_ARCHS"
export NVCC_APPEND_FLAGS="-gencode=arch=compute_$ALDEA_CUDA_PTX,code=compute_$ALDEA_CUDA_PTX"
export CMAKE_INCLUDE_PATH="$cudnn/include"
export CMAKE_LIBRARY_PATH="$cudnn/lib"
export CMAKE_PARALLEL="${CMAKE_PARALLEL:-$(nproc)}"
export PATH="$toolkit/bin:$PATH"
export CARGO_TARGET_DIR="$ALDEA_CUDA_TARGET_DIR"

aldea_log "building aldea with CUDA (SASS $ALDEA_CUDA_ARCHS, PTX compute_$ALDEA_CUDA_PTX) into $CARGO_TARGET_DIR"
cargo build --release --locked -p aldea --bin aldea --features aldea/cuda

bin="$CARGO_TARGET_DIR/release/aldea"
aldea_log "built $bin ($(du -h "$bin" | cut -f1))"
# Smoke test: libcudnn and libcublas from the wheels, no GPU and no driver here.
export LD_LIBRARY_PATH="$cudnn/lib:$toolkit/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
version="$("$bin" --version)"
echo "$version"
case "$version" in *CUDA*) ;; *) aldea_log "smoke test: not a CUDA build"; exit 1 ;; esac
clip="$ALDEA_REPO/fixtures/real-dev/$(sed -n 2p "$ALDEA_REPO/fixtures/real-dev/refs.tsv" | cut -f1)"
ALDEA_HOME="${ALDEA_TEST_HOME:-$HOME/.cache/aldea/test-home}" "$bin" transcribe --device auto --format text "$clip"
aldea_log "smoke test passed: the CUDA build runs on the CPU where no GPU is"
