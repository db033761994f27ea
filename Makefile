# Common tasks. Each target is one command from README.md; `make help` lists them.
VENV   ?= .venv
BIN    := $(VENV)/bin
BUNDLE ?= bundles/default
PRESET ?= default

.PHONY: help install train serve test lint format check-deploy dashboard bench image test-image clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

$(BIN)/sift-serve:
	python3 -m venv $(VENV) && $(BIN)/pip install -q -e '.[train,dev]'

install: $(BIN)/sift-serve ## the virtual environment with the server, training and test tools

train: install ## train $(BUNDLE) with preset $(PRESET) (default: bundles/default, ~42 min on 2 cores)
	$(BIN)/sift-train --preset $(PRESET) --output $(BUNDLE)

serve: install ## train the bundle if there is none, then serve it on localhost:50051 (metrics :9095)
	test -f $(BUNDLE)/manifest.json || $(BIN)/sift-train --preset $(PRESET) --output $(BUNDLE)
	$(BIN)/sift-serve --bundle $(BUNDLE)

test: install ## the test suite (what .ci/run runs)
	$(BIN)/pytest -q

lint: install ## ruff: lint and formatting
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

format: install ## ruff: fix what it can and format
	$(BIN)/ruff check --fix . && $(BIN)/ruff format .

check-deploy: install ## Kubernetes schemas, promtool rules and config, the Grafana dashboard
	$(BIN)/pytest -q tests/deploy/test_k8s.py tests/deploy/test_prometheus.py tests/deploy/test_grafana.py

dashboard: install ## regenerate deploy/grafana/sift-dashboard.json
	$(BIN)/python deploy/grafana/build_dashboard.py

bench: install ## every benchmark in benchmarks/results (about 35 minutes; needs $(BUNDLE))
	$(BIN)/sift-bench load --bundle $(BUNDLE) --workload intent
	$(BIN)/sift-bench models --bundle $(BUNDLE)
	$(BIN)/sift-bench startup --bundle $(BUNDLE) --repeats 5
	$(BIN)/sift-bench drain --bundle $(BUNDLE)
	$(BIN)/sift-bench batch --bundle $(BUNDLE)

image: ## the Docker image `sift` with $(BUNDLE), built offline by buildah on a local python:3.11-slim
	deploy/docker/local-base-image.sh
	buildah bud --isolation chroot --pull=never --format docker \
	  --secret id=pipcert,src=/etc/ssl/certs/ca-certificates.crt --build-arg BUNDLE=$(BUNDLE) -t sift .

test-image: install ## build the image, run it and call it (needs buildah and debootstrap)
	$(BIN)/pytest -q -m container tests/deploy/test_docker.py

clean: ## remove the virtual environment and caches (not bundles/)
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
