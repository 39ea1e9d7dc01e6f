# imops: a thin Makefile over CMake/CTest. `make demo` and `make test` work on a
# fresh Debian machine as root: they install what is missing first.
SHELL := /bin/bash
JOBS ?= 2
BUILD ?= build
ASAN_BUILD ?= build-asan
FUZZ_BUILD ?= build-fuzz
VENV ?= .venv
KFP_VENV ?= .venv-kfp
PY := $(VENV)/bin/python
FUZZ_SECONDS ?= 20
DEMO_DIR ?= demo-data/surface
DEMO_COUNT ?= 2000
DEMO_EPOCHS ?= 5
DEMO_SERVE_PORT ?= 3000
DEMO_SERVER_PORT ?= 5000

.PHONY: all deps build asan fuzz venv test unit unit-asan fuzz-smoke integration demo bench bench-infer bench-train bench-serve bench-sweep bench-track clean

all: build

deps:
	@scripts/install-deps.sh

$(BUILD)/CMakeCache.txt:
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release

build: deps $(BUILD)/CMakeCache.txt
	cmake --build $(BUILD) -j$(JOBS)

$(ASAN_BUILD)/CMakeCache.txt:
	cmake -S . -B $(ASAN_BUILD) -DCMAKE_BUILD_TYPE=Debug -DIM_SANITIZE=ON

asan: deps $(ASAN_BUILD)/CMakeCache.txt
	cmake --build $(ASAN_BUILD) -j$(JOBS)

$(FUZZ_BUILD)/CMakeCache.txt:
	CC=clang cmake -S . -B $(FUZZ_BUILD) -DCMAKE_BUILD_TYPE=Debug -DIM_FUZZ=ON -DIM_SANITIZE=ON -DIM_BUILD_TESTS=OFF

fuzz: deps $(FUZZ_BUILD)/CMakeCache.txt
	cmake --build $(FUZZ_BUILD) -j$(JOBS)

$(VENV)/.ok: tests/requirements.txt
	/usr/bin/python3 -m venv --system-site-packages $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r tests/requirements.txt
	touch $@

# The kfp SDK pins protobuf/click exactly: its own venv (tests/requirements-kfp.txt).
$(KFP_VENV)/.ok: tests/requirements-kfp.txt
	/usr/bin/python3 -m venv $(KFP_VENV)
	$(KFP_VENV)/bin/python -m pip install -q --disable-pip-version-check -r tests/requirements-kfp.txt
	touch $@

venv: deps $(VENV)/.ok $(KFP_VENV)/.ok

unit: build
	cd $(BUILD) && ctest --output-on-failure -j$(JOBS)

unit-asan: asan
	cd $(ASAN_BUILD) && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  ctest --output-on-failure -j$(JOBS)

fuzz-smoke: fuzz
	@set -e; for f in $(FUZZ_BUILD)/fuzz_*; do \
	  [ -x "$$f" ] || continue; name=$$(basename $$f); corpus=tests/fuzz/corpus/$${name#fuzz_}; \
	  work=$$(mktemp -d); [ -d "$$corpus" ] && cp -r $$corpus/. $$work/; \
	  echo "fuzzing $$name for $(FUZZ_SECONDS) s"; \
	  $$f -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=2048 -print_final_stats=0 $$work >$$work.log 2>&1 || { tail -40 $$work.log; exit 1; }; \
	  tail -1 $$work.log; rm -rf $$work $$work.log; \
	done

integration: build venv
	IMOPS_BIN=$(abspath $(BUILD))/imops $(PY) -m pytest -q tests/integration

test: unit unit-asan fuzz-smoke integration
	@echo "make test: all suites passed"

demo: build
	@set -e; \
	echo "== imops datagen surface: $(DEMO_COUNT) synthetic concrete images"; \
	$(BUILD)/imops datagen surface --out $(DEMO_DIR) --count $(DEMO_COUNT) --size 227 --seed 42; \
	echo "== imops preprocess (split 70/15/15, mean/std, cache at 112)"; \
	$(BUILD)/imops preprocess --data $(DEMO_DIR) --img-size 112; \
	echo; echo "mean-std.txt:"; cat $(DEMO_DIR)/mean-std.txt; \
	echo; echo "contact sheet: $(DEMO_DIR)/contact-sheet.png"; \
	echo "== imops train (surfacenet, $(DEMO_EPOCHS) epochs; tracked in $${IMOPS_HOME:-./imops-workspace})"; \
	$(BUILD)/imops train --data $(DEMO_DIR) --model surfacenet --epochs $(DEMO_EPOCHS) --batch-size 32 \
	  --optimizer adam --lr 0.003 --weight-decay 0 --experiment demo --json > $(DEMO_DIR)/../train.json; \
	run=$$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["run_id"])' $(DEMO_DIR)/../train.json); \
	echo "run $$run"; \
	echo "== imops test (test split)"; \
	$(BUILD)/imops test --model runs:/$$run/model --data $(DEMO_DIR); \
	echo "== imops models register"; \
	$(BUILD)/imops models register $$run surface; \
	echo "== imops predict"; \
	$(BUILD)/imops predict --model models:/surface/latest $(DEMO_DIR)/Positive/00001.jpg $(DEMO_DIR)/Negative/00001.jpg; \
	echo "== imops export onnx"; \
	$(BUILD)/imops export onnx models:/surface/latest $(DEMO_DIR)/../surface.onnx --with-preprocess --probabilities; \
	echo "== imops serve (model server) and imops server (tracking + registry, MLflow REST API)"; \
	$(BUILD)/imops serve models:/surface/latest --port $(DEMO_SERVE_PORT) & serve_pid=$$!; \
	$(BUILD)/imops server --port $(DEMO_SERVER_PORT) & server_pid=$$!; \
	trap 'kill $$serve_pid $$server_pid 2>/dev/null; wait $$serve_pid $$server_pid 2>/dev/null' EXIT; \
	for i in $$(seq 100); do curl -sf http://127.0.0.1:$(DEMO_SERVE_PORT)/readyz >/dev/null && break; sleep 0.1; done; \
	echo "sample prediction over HTTP:"; \
	$(BUILD)/imops predict --url http://127.0.0.1:$(DEMO_SERVE_PORT) $(DEMO_DIR)/Positive/00001.jpg; \
	curl -s -F file=@$(DEMO_DIR)/Positive/00001.jpg 'http://127.0.0.1:$(DEMO_SERVE_PORT)/predict?format=classes'; echo; \
	echo; \
	echo "model server:    http://127.0.0.1:$(DEMO_SERVE_PORT)/docs  (/predict, /v2, /metrics)"; \
	echo "tracking server: http://127.0.0.1:$(DEMO_SERVER_PORT)/api/2.0/mlflow/experiments/search?max_results=10"; \
	echo "Both stop when the demo ends; to keep them: $(BUILD)/imops serve models:/surface/latest --port $(DEMO_SERVE_PORT)"; \
	echo "and $(BUILD)/imops server --port $(DEMO_SERVER_PORT). The whole flow as a pipeline:"; \
	echo "$(BUILD)/imops pipeline run examples/surface/pipeline.yaml -p data_dir=$(DEMO_DIR) -p preprocess_yes_no=no"

bench: build
	bench/preprocess/run.sh

# Inference race: imops' folded graph vs ONNX Runtime and PyTorch (bench/infer/run.sh).
bench-infer: build venv
	cmake --build $(BUILD) --target bench_infer -j$(JOBS)
	PYTHON=$(PY) bench/infer/run.sh $(BUILD)

# Sweep searches: imops random/bayes against Optuna's random/TPE on Branin, Hartmann-6
# and a mixed function, median best after 10/25/50 trials over 10 seeds (bench/sweep/run.sh).
bench-sweep: build venv
	cmake --build $(BUILD) --target bench_sweep -j$(JOBS)
	BUILD=$(BUILD) PY=$(PY) bench/sweep/run.sh 10

# Training race: imops against PyTorch, img/s, memory, GFLOP/s (bench/train/run.sh).
bench-train: build
	cmake --build $(BUILD) --target bench_train -j$(JOBS)
	bench/train/run.sh $(BUILD)

# Serving race: imops serve against BentoML (same network and weights) under wrk at
# concurrency 1, 8, 64: req/s, p50/p99, memory (bench/serve/run.sh; makes bench/.venv-bentoml).
bench-serve: build
	IMOPS_BIN=$(BUILD)/imops bench/serve/run.sh

# Tracking server race: imops server against mlflow server (SQLite), log_batch req/s and
# run search p50/p99 over 10,000 runs, median of 3 (bench/track/run.sh).
bench-track: build venv
	PY=$(PY) bench/track/run.sh $(BUILD)

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(FUZZ_BUILD)
