"""The CUDA kernels (csrc/cuda/*.cu) executed on the CPU under an emulation of
the CUDA execution model; see docs/cuda_emulation.md.

build.py   the rewrite of the .cu files and the build (torch.ops.rmpe_ext_cuda_emu)
emu.h, emu_runtime.{h,cpp}, include/   the emulation (fibers, warp intrinsics, launches)
device.py  "cuda" as the emulated device for the test suite (RMPE_CUDA_EMU=1)
"""
