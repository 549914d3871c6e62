# The two commands of the README, each installing what it needs into .venv:
#   make demo   the pipeline end to end on the shipped sample (4 COCO images, 118 boxes, BlazePose): AP, timings vs AlphaPose
#   make test   the test suite (its learning tests again without vector kernels, 1 thread), then a one-round smoke run of every benchmark
# Also: make nms-demo (pose NMS on 413 real proposals vs AlphaPose), make bench (the benchmarks, ratios into benchmarks/last_run.md), make cuda-check (nvcc on every .cu),
# make sanitize (the op tests against an AddressSanitizer + UBSan build of the extension),
# make test-cuda-emu (the CUDA kernels run on the CPU under an emulation of CUDA; part of make test).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
NATIVE := $(shell find csrc -name '*.cpp' -o -name '*.cu' -o -name '*.h') setup.py

.PHONY: install demo nms-demo test test-cuda-emu bench cuda-check sanitize clean

$(VENV)/.deps: requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -r requirements-dev.txt
	$(PY) -m pip install -q --no-deps alphapose==1.1
	touch $@

$(VENV)/.built: $(VENV)/.deps $(NATIVE)
	$(PY) -m pip install -q --no-build-isolation --no-deps -e .
	touch $@

install: $(VENV)/.built

demo: install
	$(PY) examples/main_job.py

nms-demo: install
	$(PY) examples/pose_nms_demo.py

test: install
	$(PY) -m pytest -q tests
	ATEN_CPU_CAPABILITY=default OMP_NUM_THREADS=1 $(PY) -m pytest -q -p no:cacheprovider -m learning tests
	$(MAKE) --no-print-directory test-cuda-emu
	$(PY) -m pytest -q benchmarks --benchmark-disable

# csrc/cuda compiled for the host under an emulation of the CUDA execution model
# (tests/cuda_emu, docs/cuda_emulation.md): every test that runs on "cuda", with
# "cuda" the emulated device; then tests/test_cuda_emu.py under ASan + UBSan.
# (tests/test_cuda_emu.py itself runs with the other tests above.)
test-cuda-emu: install
	RMPE_CUDA_EMU=1 $(PY) -m pytest -q -p no:cacheprovider tests
	$(PY) tests/cuda_emu/run_sanitized.py

bench: install
	RMPE_BENCH_THREADS=1 RMPE_BENCH_REPORT=benchmarks/last_run_pose_nms.md $(PY) -m pytest benchmarks/test_bench_pose_nms.py
	RMPE_BENCH_THREADS=2 RMPE_BENCH_REPORT=benchmarks/last_run_affine.md $(PY) -m pytest benchmarks/test_bench_affine.py

cuda-check: $(VENV)/.deps
	PATH=$(abspath $(VENV))/bin:$$PATH tools/compile_cuda.sh sm_90

# The extension built with ASan + UBSan (RMPE_EXT_SANITIZE=1 in setup.py) into $(SAN), beside the
# package's Python files (the installed build is untouched); the op tests then import it from there,
# with the sanitizer runtime preloaded (Python itself is not instrumented; libstdc++ preloaded too,
# else ASan cannot find the real __cxa_throw for the C++ exceptions of the checks; -P: not the source tree
# in the current directory). Any report is fatal.
SAN := build/sanitize
SAN_ENV := LD_PRELOAD="$$(gcc -print-file-name=libasan.so) $$(gcc -print-file-name=libstdc++.so)" ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 \
	UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 PYTHONPATH=$(abspath $(SAN))
sanitize: $(VENV)/.deps
	rm -rf $(SAN) && mkdir -p $(SAN)
	cp -r rmpe_ext $(SAN)/ && rm -rf $(SAN)/rmpe_ext/_C*.so $(SAN)/rmpe_ext/_build_info.py $(SAN)/rmpe_ext/__pycache__
	RMPE_EXT_SANITIZE=1 $(PY) setup.py -q build_ext --build-lib $(SAN) --build-temp $(SAN)/tmp
	$(SAN_ENV) $(PY) -P -c "import rmpe_ext; assert rmpe_ext.__file__.startswith('$(abspath $(SAN))'), rmpe_ext.__file__"
	$(SAN_ENV) $(PY) -P -m pytest -q -p no:cacheprovider tests/test_*.py

clean:
	rm -rf build $(VENV) rmpe_ext/_C*.so rmpe_ext/_build_info.py *.egg-info
