# One entry point for users and CI: `make test` and `make demo` set themselves up on first use.
VENV   := .venv
PY     := $(VENV)/bin/python
# A CPU-only machine must not pull a multi-GB CUDA build; GPU users override TORCH (or pre-install torch).
TORCH  ?= torch==2.13.0
STAMP  := $(VENV)/.installed

.PHONY: install test test-slow demo bench bench-demo clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[test]"
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

# Fault injection at scale and the 1,000-pair memory test (minutes); CI runs it after `make test`.
test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

demo: $(STAMP)
	$(PY) jobs/sweep.py

bench: $(STAMP)
	$(PY) benchmarks/sweep_speed.py
	$(PY) benchmarks/techniques.py
	$(PY) benchmarks/scaling.py
	$(PY) benchmarks/alpha_vmap.py

bench-demo: $(STAMP)
	$(PY) benchmarks/demo_budget.py --retrain
	$(PY) benchmarks/adaptive_alpha.py
	$(PY) benchmarks/barrier_ci.py
	$(PY) benchmarks/dtype_error.py

clean:
	rm -rf $(VENV) results .pytest_cache
