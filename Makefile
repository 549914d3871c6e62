# The two commands of the README, each installing what it needs into .venv:
#   make demo   the pipeline end to end on the shipped sample (4 COCO images, 118 boxes, BlazePose): AP, timings vs AlphaPose
#   make test   the test suite, then a one-round smoke run of every benchmark
# Also: make nms-demo (pose NMS on 413 real proposals vs AlphaPose), make bench (the benchmarks, ratios into benchmarks/last_run.md), make cuda-check (nvcc on every .cu).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
NATIVE := $(shell find csrc -name '*.cpp' -o -name '*.cu' -o -name '*.h') setup.py

.PHONY: install demo nms-demo test bench cuda-check clean

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
	$(PY) -m pytest -q benchmarks --benchmark-disable

bench: install
	RMPE_BENCH_THREADS=1 RMPE_BENCH_REPORT=benchmarks/last_run_pose_nms.md $(PY) -m pytest benchmarks/test_bench_pose_nms.py
	RMPE_BENCH_THREADS=2 RMPE_BENCH_REPORT=benchmarks/last_run_affine.md $(PY) -m pytest benchmarks/test_bench_affine.py

cuda-check: $(VENV)/.deps
	PATH=$(abspath $(VENV))/bin:$$PATH tools/compile_cuda.sh sm_90

clean:
	rm -rf build $(VENV) rmpe_ext/_C*.so rmpe_ext/_build_info.py *.egg-info
