"""The emulated CUDA kernels under AddressSanitizer + UBSan.

Builds the "asan" variant (build.py: -fsanitize=address,undefined,float-cast-overflow,
-fno-sanitize-recover, fiber switches annotated for ASan) and runs
tests/test_cuda_emu.py on it, on its smaller "asan" case set, in a Python that
preloads the compiler's libasan (neither Python nor torch is instrumented: the
kernels, the emulation and the host code of the .cu files are). Any report
aborts the run with a non-zero status.

    python tests/cuda_emu/run_sanitized.py [pytest arguments]
"""
import os
import pathlib
import subprocess
import sys

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parents[1]


def main(argv):
    # (built by the tests' own process: building here would load the library into a
    # process without the sanitizer runtime)
    cxx = os.environ.get("CXX", "c++")
    # libstdc++ preloaded too: ASan's __cxa_throw interceptor needs it at start-up
    libs = [subprocess.check_output([cxx, f"-print-file-name={lib}"], text=True).strip()
            for lib in ("libasan.so", "libstdc++.so.6")]
    if not all(os.path.isabs(lib) for lib in libs):
        sys.exit(f"run_sanitized: {cxx} does not have {libs}")
    env = dict(os.environ, LD_PRELOAD=" ".join(libs), RMPE_CUDA_EMU_VARIANT="asan",
               # leaks: Python and torch keep their allocations for good; ODR: torch's own libraries
               ASAN_OPTIONS="detect_leaks=0:detect_odr_violation=0:abort_on_error=1:"
                            "check_initialization_order=1:strict_init_order=1",
               UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1")
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_cuda_emu.py", *argv]
    print("run_sanitized:", " ".join(cmd), flush=True)
    return subprocess.call(cmd, env=env, cwd=ROOT)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
