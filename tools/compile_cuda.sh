#!/usr/bin/env bash
# Compile-checks every CUDA file with nvcc against the installed torch's
# headers. Works with a CPU build of torch: the .cu files include only ATen's
# core headers and csrc/cuda/cuda_context.h (see STYLE notes in README).
# Usage: tools/compile_cuda.sh [arch ...]   (default: sm_90; e.g. sm_80 sm_90)
set -euo pipefail
cd "$(dirname "$0")/.."
NVCC=${NVCC:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}
ARCHS=("${@:-sm_90}")
TORCH_INC=$(python -c "from torch.utils.cpp_extension import include_paths; print(' '.join('-I' + p for p in include_paths()))")
ABI=$(python -c "import torch; print(int(torch._C._GLIBCXX_USE_CXX11_ABI))")
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
status=0
for cu in csrc/cuda/*.cu; do
  for arch in "${ARCHS[@]}"; do
    echo "nvcc $cu ($arch)"
    if ! "$NVCC" -c "$cu" -o "$out/$(basename "$cu").$arch.o" -std=c++20 -O3 -arch="$arch" \
        --expt-relaxed-constexpr -Xcompiler -fPIC -D_GLIBCXX_USE_CXX11_ABI="$ABI" -DRMPE_WITH_CUDA \
        -Icsrc $TORCH_INC; then
      status=1
    fi
  done
done
[ $status -eq 0 ] && echo "all CUDA files compiled"
exit $status
