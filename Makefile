# Two entry points: `make demo` and `make test`. Each creates or refreshes .venv itself:
# `make demo` installs torch and the core package, `make test` adds the dev extras on top.
# torch comes first, by tools/install_torch.py: the CPU build from pip's configured index (a
# local wheel works offline), else the PyTorch CPU index, else PyPI's torch (on Linux x86_64 a
# multi-GB CUDA build); it prints which. To choose: make test TORCH_SPEC="torch==2.13.0"
# PIP_TORCH_FLAGS="--index-url <index>" (a GPU: see README, "Install").
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
TORCH_VERSION ?= 2.13.0
TORCH_SPEC ?=
PIP_TORCH_FLAGS ?=
EXTRAS ?= dev
# Compiled kernels are cached here, so only the first run pays for compilation.
export TORCHINDUCTOR_CACHE_DIR ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/numerics/inductor

.PHONY: venv test lint demo bench docs findings findings-pvf runs-archive gpu-check clean

# Two stamps: `make demo` then `make test` adds the extras to the same venv.
$(VENV)/.stamp-demo: pyproject.toml Makefile tools/install_torch.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) tools/install_torch.py $(TORCH_VERSION) --spec "$(TORCH_SPEC)" --pip-args "$(PIP_TORCH_FLAGS)"
	$(PY) -m pip install -q -e .
	touch $@

$(VENV)/.stamp-test: $(VENV)/.stamp-demo
	$(PY) -m pip install -q -e ".[$(EXTRAS)]"
	touch $@

.PHONY: venv-demo
venv-demo: $(VENV)/.stamp-demo
venv: $(VENV)/.stamp-test

lint: venv
	$(VENV)/bin/ruff check numerics tests benchmarks tools
	$(VENV)/bin/ruff format --check numerics tests benchmarks tools
	$(VENV)/bin/mypy

test: lint
	$(PY) -m pytest

demo: venv-demo
	$(VENV)/bin/numerics sweep sweeps/demo.yaml --resume
	$(VENV)/bin/numerics compare results/demo

bench: venv
	$(VENV)/bin/numerics bench

# On a machine with an NVIDIA GPU and the CUDA build of torch (TORCH_SPEC="torch==2.13.0"):
# the CUDA paths bit for bit against the CPU (every format, rounding and backend; stochastic
# rounding included), a recipe trained on CUDA, the quantized all-reduce hook over nccl; then
# the quantizer benchmark on the GPU.
gpu-check: venv
	@$(PY) -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 'gpu-check: torch sees no CUDA device (a CPU build? make gpu-check TORCH_SPEC=torch==2.13.0)')"
	$(PY) -m pytest tests/gpu -rs
	$(VENV)/bin/numerics bench --device cuda --no-qtorch

# Regenerate the tables and plots marked in the docs from the run directories under results/.
docs: venv
	$(VENV)/bin/numerics docs docs/findings.md README.md

# Every findings sweep (resumable: finished runs are kept), then the docs. A sweep with a failed
# run does not stop the others; docs/findings.md lists what is missing. The evaluation sweeps
# (direct-cast inference) read the demo's trained runs, so they run after the demo.
FINDINGS_EVAL := sweeps/findings/direct_cast_rouhani.yaml sweeps/findings/pvf_dlrm_seeds.yaml
FINDINGS := $(filter-out $(FINDINGS_EVAL),$(sort $(wildcard sweeps/findings/*.yaml)))
# The run records behind the docs' tables (config.yaml, summary.json, pvf.json; no checkpoints
# or curves), reproducible bytes: `tar xzf docs/findings/runs.tar.gz && make docs` on a clone.
runs-archive:
	tar czf docs/findings/runs.tar.gz --sort=name --mtime='2026-12-06 00:00Z' --owner=0 --group=0 \
		results/findings_*/*/summary.json results/findings_*/*/config.yaml \
		results/findings_*/sweep.yaml results/findings_pvf/*/pvf.json \
		results/demo/*/summary.json results/demo/*/config.yaml results/demo/sweep.yaml

findings: venv
	@for s in $(FINDINGS); do \
		$(VENV)/bin/numerics sweep $$s --resume || echo "findings: $$s has failed runs (see its table)"; \
	done
	$(VENV)/bin/numerics sweep sweeps/demo.yaml --resume
	@for s in $(FINDINGS_EVAL); do \
		$(VENV)/bin/numerics sweep $$s --resume || echo "findings: $$s has failed runs (see its table)"; \
	done
	$(VENV)/bin/numerics evaluate $(DLRM_FP32) --results results/findings_direct_cast_tables --format fp32
	@for f in int8_rowwise int4_rowwise int2_rowwise; do \
		$(VENV)/bin/numerics evaluate $(DLRM_FP32) --results results/findings_direct_cast_tables \
			--set "numerics.overrides=[{match: [embeddings.*], weights: $$f}]" --set numerics.name=tables-$$f; \
	done
	$(MAKE) findings-pvf
	$(MAKE) docs

# Fault injection (docs/findings.md, section 11) on the demo's fp32 DLRM, ResNet-20 and GPT, seed 0:
# float32 bits by component and bit position, then the DLRM with MXFP4 / MXINT8 weights (their
# element codes and E8M0 scale bytes). Existing folders are redone (a few minutes each).
DLRM_FP32 = $(wildcard results/demo/recsys-dlrm-synthetic_criteo-fp32-s?-*)
DLRM0 = $(wildcard results/demo/recsys-dlrm-synthetic_criteo-fp32-s0-*)
RESNET0 = $(wildcard results/demo/image-resnet20-digits-fp32-s0-*)
GPT0 = $(wildcard results/demo/language-gpt-stdlib-fp32-s0-*)
PVF = $(VENV)/bin/numerics pvf
BYTE_BITS = $(addprefix --bit ,0 1 2 3 4 5 6 7)
findings-pvf: venv
	$(PVF) $(DLRM0) --faults 3000 --examples 512 --out results/findings_pvf/dlrm_components
	$(PVF) $(DLRM0) --faults 1000 --examples 512 $(addprefix --bit ,31 30 29 28 23 22 12 0) \
		--out results/findings_pvf/dlrm_bits
	$(PVF) $(RESNET0) --faults 3000 --examples 256 --out results/findings_pvf/resnet_components
	$(PVF) $(RESNET0) --faults 500 --examples 256 $(addprefix --bit ,31 30 29 23 22 0) \
		--out results/findings_pvf/resnet_bits
	$(PVF) $(GPT0) --faults 1000 --examples 32 --out results/findings_pvf/gpt_components
	$(PVF) $(GPT0) --faults 300 --examples 32 $(addprefix --bit ,31 30 29 23 22 0) \
		--out results/findings_pvf/gpt_bits
	$(PVF) $(DLRM0) --set numerics.weights=mxfp4_e2m1 --field element $(addprefix --bit ,0 1 2 3) \
		--faults 500 --examples 512 --out results/findings_pvf/dlrm_mxfp4_element
	$(PVF) $(DLRM0) --set numerics.weights=mxfp4_e2m1 --field scale $(BYTE_BITS) \
		--faults 500 --examples 512 --out results/findings_pvf/dlrm_mxfp4_scale
	$(PVF) $(DLRM0) --set numerics.weights=mxint8 --field element $(BYTE_BITS) \
		--faults 500 --examples 512 --out results/findings_pvf/dlrm_mxint8_element
	$(PVF) $(DLRM0) --set numerics.weights=mxint8 --field scale $(BYTE_BITS) \
		--faults 500 --examples 512 --out results/findings_pvf/dlrm_mxint8_scale

clean:
	rm -rf $(VENV) .cache .pytest_cache .mypy_cache .ruff_cache
