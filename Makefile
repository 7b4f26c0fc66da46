# The two commands a new user needs: `make demo` and `make test` (see README.md).
PY      ?= python3.11
VENV    := .venv
VPY     := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
SLURM_PKGS := slurmctld slurmd slurm-client slurmdbd mariadb-server-core mariadb-client-core
PYTEST_ARGS ?=

.PHONY: install test demo lint slurm-deps bench clean

$(STAMP): setup.cfg pyproject.toml
	@test -x $(VPY) || (command -v $(PY) >/dev/null && $(PY) -m venv $(VENV) || python3 -m venv $(VENV))
	$(VPY) -m pip install -q --upgrade pip
	# Exact pins first: these wheels are on the machines' local disk (notes/environment.md).
	$(VPY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(VPY) -m pip install -q -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

# Debian packages for the local Slurm harness (tests/slurm). Needs root; without it the Slurm
# tests skip with the reason printed (and fail under CI=true, where root is available).
slurm-deps:
	@if command -v slurmctld >/dev/null && command -v slurmdbd >/dev/null && command -v mariadbd >/dev/null; then \
		true; \
	elif [ "$$(id -u)" = 0 ]; then \
		(apt-get update -qq || true) && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(SLURM_PKGS) >/dev/null \
		|| echo "slurm-deps: apt-get install failed; Slurm tests will report why"; \
	else \
		echo "slurm-deps: not root, Slurm packages not installed; Slurm tests will skip"; \
	fi

test: install slurm-deps
	$(VPY) -m pytest -q $(PYTEST_ARGS)

demo: install slurm-deps
	$(VPY) -m examples.demo

lint: install
	$(VENV)/bin/ruff check personvit shard_tools slurm tests benchmarks examples

bench: install
	for b in benchmarks/*.py; do $(VPY) $$b || exit 1; done

clean:
	rm -rf demo_out runs .pytest_cache
