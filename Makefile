# Two entry points that work on a fresh machine with no network beyond the package registries:
#   make demo   - install, then train/evaluate/predict on built-in data with built-in weights
#   make test   - install, lint, and run the whole test suite (unit + real-data tier)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.imgcls-installed
DEMO_DIR ?= runs/demo

.PHONY: install browser demo test test-unit test-isa lint docs format clean

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
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir build/site

# Each run names its CPU first (model, the features that pick oneDNN's kernels, any ISA limit),
# so a failure report says which machine's arithmetic it came from.
test: lint browser docs
	@$(PY) -m imgcls.system.cpu
	$(PY) -m pytest -q

# The numerics-sensitive tests again under other CPUs' kernels: oneDNN (convolutions) and MKL
# (matrix products) run the code paths of the ISA level named, as a CPU of that level would, so
# float tolerances are checked against more than this machine's summation order.
ISA_LIMITS ?= AVX2 AVX512_CORE
ISA_TESTS ?= tests/deploy/test_export.py tests/system/test_cpu.py tests/system/test_precision.py \
	tests/models/test_efficientnet_lite.py tests/models/test_batchnorm_fold.py \
	tests/training/test_fast_path.py tests/training/test_loop.py tests/training/test_linear_head.py \
	tests/training/test_linear_head_at_size.py tests/inference/test_saved_model_compat.py \
	tests/inference/test_similarity.py tests/test_readme.py \
	tests/training/test_finetune.py::test_compile_trains_through_a_compiled_graph_to_the_eager_result \
	tests/training/test_finetune.py::test_finetune_calibrate_folds_the_temperature_into_the_saved_model \
	tests/training/test_finetune.py::test_finetune_writes_history_curves_and_a_model_that_scores_as_reported \
	tests/system/test_distributed.py::test_torchrun_fine_tune_writes_one_run_that_scores_as_one_process_scores_it \
	tests/system/test_distributed.py::test_torchrun_probe_shares_its_features_through_the_cache \
	tests/deploy/test_server.py::test_predict_bad_uploads_and_concurrency \
	tests/inference/test_batch.py::test_tta_reaches_batch_prediction \
	tests/workflows/test_embed.py::test_faiss_and_numpy_find_the_same_neighbours \
	tests/training/test_knn_at_size.py::test_searching_the_bank_in_chunks_finds_the_same_neighbours
test-isa: $(STAMP)
	@for isa in $(ISA_LIMITS); do \
		mkl=$$(case $$isa in AVX2*) echo AVX2;; *) echo AVX512;; esac); \
		export ONEDNN_MAX_CPU_ISA=$$isa MKL_ENABLE_INSTRUCTIONS=$$mkl; \
		$(PY) -m imgcls.system.cpu; \
		$(PY) -m pytest -q -p no:cacheprovider $(ISA_TESTS) || exit 1; \
	done

test-unit: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

format: $(STAMP)
	$(VENV)/bin/ruff format src tests benchmarks
	$(VENV)/bin/ruff check --fix src tests benchmarks

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
