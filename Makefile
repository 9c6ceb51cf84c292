# Two entry points that work on a fresh machine with no network beyond the package registries:
#   make demo   - install, then train/evaluate/predict on built-in data with built-in weights
#   make test   - install, lint, and run the whole test suite (unit + real-data tier)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.imgcls-installed
DEMO_DIR ?= runs/demo

.PHONY: install browser demo test test-unit lint docs format clean

install: $(STAMP)

# torch/torchvision are pinned exactly: these builds lie on the machines' disk, and any
# other version makes pip download gigabytes.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install --quiet -e '.[train,serve,data,search,doctor,ray,dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/imgcls demo --output $(DEMO_DIR) --overwrite

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

# Browser tests drive Debian's chromium (never a downloaded browser); as root we install it,
# otherwise those tests skip and say why.
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || \
		echo "chromium is not installed and cannot be installed here: browser tests will skip"

# The documentation site (docs/, mkdocs.yml); --strict turns every warning, such as a broken
# link, into an error.
docs: $(STAMP)
	$(VENV)/bin/mkdocs build --strict --site-dir build/site

test: lint browser docs
	$(PY) -m pytest -q

test-unit: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

format: $(STAMP)
	$(VENV)/bin/ruff format src tests benchmarks
	$(VENV)/bin/ruff check --fix src tests benchmarks

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
