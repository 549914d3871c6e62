"""Build of the rmpe_ext operators as a torch C++/CUDA extension.

CUDA kernels are built when torch is a CUDA build and nvcc is found; set
RMPE_EXT_CUDA=1 to require them (the build fails if they cannot be built) or
RMPE_EXT_CUDA=0 to skip them. TORCH_CUDA_ARCH_LIST picks the GPU
architectures, MAX_JOBS the parallel compile jobs (both read by torch's
BuildExtension). Install with `pip install --no-build-isolation .` so the
binary is built against the torch already installed.
"""
import glob
import os
import shutil
import sys

from setuptools import find_packages, setup

try:
    import torch
    from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension
except ImportError:  # pragma: no cover - a build environment without torch
    sys.exit(
        "rmpe_ext builds against the torch you have installed: install torch first, "
        "then `pip install --no-build-isolation .` (build isolation hides torch)."
    )

ROOT = os.path.dirname(os.path.abspath(__file__))


def find_cuda_home():
    """CUDA_HOME/CUDA_PATH, else the toolkit that holds bin/nvcc and include/cuda_runtime.h."""
    candidates = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"]
    nvcc = shutil.which("nvcc")
    if nvcc:
        candidates.append(os.path.dirname(os.path.dirname(os.path.realpath(nvcc))))
    for c in candidates:
        if c and os.path.exists(os.path.join(c, "bin", "nvcc")) and os.path.exists(
            os.path.join(c, "include", "cuda_runtime.h")
        ):
            return c
    return None


def want_cuda():
    forced = os.environ.get("RMPE_EXT_CUDA", "").strip().lower()
    cuda_home = find_cuda_home()
    reason = None
    if torch.version.cuda is None:
        reason = f"torch {torch.__version__} is a CPU build"
    elif cuda_home is None:
        reason = "nvcc was not found (set CUDA_HOME)"
    if forced in ("0", "false", "no", "off"):
        return False, "RMPE_EXT_CUDA=0", None
    if forced in ("1", "true", "yes", "on"):
        if reason:
            sys.exit(f"RMPE_EXT_CUDA=1 but the CUDA kernels cannot be built: {reason}.")
        return True, "RMPE_EXT_CUDA=1", cuda_home
    if reason:
        return False, reason, None
    return True, f"torch {torch.__version__} has CUDA {torch.version.cuda}, nvcc in {cuda_home}", cuda_home


with_cuda, why, cuda_home = want_cuda()
if cuda_home:
    os.environ["CUDA_HOME"] = cuda_home  # read by torch.utils.cpp_extension

sources = ["csrc/ops.cpp"] + sorted(glob.glob("csrc/cpu/*.cpp"))
# The limited API of the oldest Python the package supports (python_requires):
# one binary, tagged cp310-abi3, serves 3.10 and every later Python.
LIMITED_API = "-DPy_LIMITED_API=0x030A0000"
# -fopenmp: at::parallel_for is an OpenMP pragma in ATen's headers (torch's CPU
# backend is OpenMP); without it every parallel loop of the extension runs serially.
cxx_flags = ["-O3", "-ffp-contract=off", "-fopenmp", LIMITED_API]
nvcc_flags = ["-O3", "-lineinfo", "--expt-relaxed-constexpr", LIMITED_API]
link_flags = ["-fopenmp"]
# RMPE_EXT_SANITIZE=1 (make sanitize): AddressSanitizer + UndefinedBehaviorSanitizer,
# float-to-int overflow included, every report fatal; -O1 in place of -O3.
if os.environ.get("RMPE_EXT_SANITIZE", "") == "1":
    san = "-fsanitize=address,undefined,float-cast-overflow"
    cxx_flags = ["-O1", "-g", "-fno-omit-frame-pointer", san, "-fno-sanitize-recover=all"] + cxx_flags[1:]
    link_flags += [san]
    print("rmpe_ext: building with AddressSanitizer + UndefinedBehaviorSanitizer (-O1)", flush=True)
if with_cuda:
    sources += sorted(glob.glob("csrc/cuda/*.cu")) + sorted(glob.glob("csrc/cuda/*.cpp"))
    cxx_flags.append("-DRMPE_WITH_CUDA")
    nvcc_flags.append("-DRMPE_WITH_CUDA")
    ext_cls = CUDAExtension
    arch = os.environ.get("TORCH_CUDA_ARCH_LIST", "(torch default: the visible GPUs, else all it supports)")
    print(f"rmpe_ext: building CPU + CUDA kernels ({why}); TORCH_CUDA_ARCH_LIST={arch}", flush=True)
else:
    ext_cls = CppExtension
    print(f"rmpe_ext: building CPU kernels only ({why})", flush=True)

BUILD_INFO = (
    "# Written by setup.py's build_ext: what the compiled _C was built against.\n"
    f"TORCH_VERSION = {torch.__version__!r}\n"
    f"TORCH_CUDA_VERSION = {torch.version.cuda!r}\n"
    f"WITH_CUDA = {with_cuda!r}\n"
)


class BuildExt(BuildExtension.with_options(use_ninja=True)):
    """torch's BuildExtension, then rmpe_ext/_build_info.py (read by the loader) beside the
    binary it describes: in the source tree for in-place (editable) builds, else in the build
    directory that the wheel is made from. Other setup.py invocations write nothing."""

    def run(self):
        super().run()
        path = os.path.join(ROOT if self.inplace else self.build_lib, "rmpe_ext", "_build_info.py")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(BUILD_INFO)

ext = ext_cls(
    "rmpe_ext._C",
    sources,
    include_dirs=[os.path.join(ROOT, "csrc")],
    extra_compile_args={"cxx": cxx_flags, "nvcc": nvcc_flags} if with_cuda else {"cxx": cxx_flags},
    extra_link_args=link_flags,
    py_limited_api=True,
)

setup(
    name="rmpe_ext",
    version="0.1.0",
    description="RMPE (regional multi-person pose estimation) kernels for PyTorch: pose NMS, affine crops, decode",
    # rmpe_ext: the ops package; rmpe (python/rmpe): the RMPE system built on it
    packages=find_packages(include=["rmpe_ext", "rmpe_ext.*"]) + find_packages("python", include=["rmpe", "rmpe.*"]),
    package_dir={"rmpe": "python/rmpe"},
    # rmpe/data/models/blazepose: the BlazePose landmark model, its person detector and their licence (Apache-2.0),
    # so that an installed wheel runs `rmpe run` with no other files
    package_data={"rmpe": ["data/*.json", "data/*.npz", "data/*.json.gz", "data/models/blazepose/*.tflite",
                           "data/models/blazepose/LICENSE"]},
    entry_points={"console_scripts": ["rmpe = rmpe.cli:main"]},
    ext_modules=[ext],
    cmdclass={"build_ext": BuildExt},
    options={"bdist_wheel": {"py_limited_api": "cp310"}},
    python_requires=">=3.10",
    # the binary loads only with the torch it was built against (as torchvision's wheels, the
    # metadata pins it; "==2.13.0" also admits local builds such as 2.13.0+cpu)
    install_requires=[f"torch=={torch.__version__.split('+')[0]}", "numpy", "opencv-python-headless", "pycocotools",
                      "scikit-learn", "scipy", "tqdm", "matplotlib",
                      # the default person detector and SPPE of `rmpe run` (the shipped BlazePose .tflite files)
                      "ai-edge-litert"],
    extras_require={
        "test": ["pytest", "hypothesis", "pytest-benchmark", "expecttest", "opencv-python-headless", "pycocotools"],
        "blazepose": ["ai-edge-litert"],
        # rmpe.pipeline.models.BlazePoseTorch: the same model rebuilt in torch from the .tflite (a flatbuffer parser)
        "blazepose-torch": ["tflite"],
        # rmpe.pipeline.detectors: `--detector torchvision:<arch>` (a torchvision built for this torch) and
        # `--detector yolo:<model file>`; each is imported only when that detector is asked for
        "torchvision": ["torchvision"],
        "yolo": ["ultralytics"],
    },
)
