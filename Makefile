# tgi-operator: the two commands that matter are `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: image lock demo test test-unit testenv kstatus actionlint helm venv crd bench test-kind clean

# pyproject.toml requires Python >= 3.11: say so plainly, before pip fails with an obscure requires-python error.
PY_OK := -c 'import sys; sys.exit(sys.version_info < (3, 11))'
PY_NEEDED := Python >= 3.11 is required; run e.g. make PYTHON=python3.11 $(MAKECMDGOALS)
py_version = $$($(1) -c 'import sys; print("Python " + sys.version.split()[0])' 2>/dev/null || echo "not found")

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) $(PY_OK) 2>/dev/null || \
	  { echo "$(PY_NEEDED) (PYTHON=$(PYTHON) is $(call py_version,$(PYTHON)))" >&2; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python $(PY_OK) || \
	  { echo "$(PY_NEEDED) after rm -rf $(VENV) ($(VENV) has $(call py_version,$(BIN)/python))" >&2; exit 1; }
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,test,demo]'
	touch $(STAMP)

venv: $(STAMP)  ## .venv with the package and its dev/test/demo extras

testenv:  ## build (once) or find kube-apiserver and etcd; prints their folder
	@bash hack/build-testenv.sh

kstatus:  ## build (once) or find the kstatus checker (sigs.k8s.io/cli-utils) the GitOps tests use; prints its path
	@bash hack/build-kstatus.sh

helm:  ## build (once) or find the helm CLI (helm.sh/helm/v3) the chart tests run; prints its path
	@bash hack/build-helm.sh

actionlint:  ## build (once) or find actionlint (rhysd/actionlint), which the tests run over .github/workflows; prints its path
	@bash hack/build-actionlint.sh

demo: venv testenv  ## the local demo: control plane + emulator + operator + the seed TGIService, end to end
	$(BIN)/tgi-operator demo $(DEMO_ARGS)

test: venv testenv kstatus actionlint helm  ## every test, against a real kube-apiserver + etcd, the Cloud Run emulator and cli-utils' kstatus
	KUBEBUILDER_ASSETS="$$(bash hack/build-testenv.sh)" TGI_KSTATUS_BIN="$$(bash hack/build-kstatus.sh)" \
	  TGI_HELM_BIN="$$(bash hack/build-helm.sh)" \
	  TGI_ACTIONLINT_BIN="$$(bash hack/build-actionlint.sh)" \
	  $(BIN)/python -m pytest $(PYTEST_ARGS)

test-unit: venv  ## pure-function tests only (no control plane)
	$(BIN)/python -m pytest tests/unit $(PYTEST_ARGS)

bench: venv testenv  ## N=100,300,1000 TGIServices: ramp vs a floor, steady-state calls, CPU, RSS (BENCH_ARGS="--objects 20,50")
	KUBEBUILDER_ASSETS="$$(bash hack/build-testenv.sh)" \
	  TGI_RUNTIME_PYTHON="$$(PYTHON=$(BIN)/python bash hack/build-runtime-venv.sh)" \
	  $(BIN)/python benchmarks/scale.py $(BENCH_ARGS)

crd: venv  ## regenerate the committed CRD from the pydantic models (and the Helm chart's copy of the API)
	$(BIN)/tgi-operator crd --output crds/tgiservices.tgi-operator.dev.yaml
	cp crds/tgiservices.tgi-operator.dev.yaml manifests/crd/delete-protection.yaml charts/tgi-operator/crds/

KIND_CLUSTER ?= tgi-operator-test
test-kind: venv  ## the same suite against a kind cluster (needs Docker and kind)
	kind create cluster --name $(KIND_CLUSTER) --config hack/kind.yaml --kubeconfig $(VENV)/kind.kubeconfig
	TGI_TEST_KUBECONFIG=$(CURDIR)/$(VENV)/kind.kubeconfig $(BIN)/python -m pytest $(PYTEST_ARGS); \
	  status=$$?; kind delete cluster --name $(KIND_CLUSTER); exit $$status

IMAGE ?= ghcr.io/tgi-operator/tgi-operator:dev
PLATFORMS ?=
image:  ## the operator image (docker buildx), loaded locally; multi-arch: PLATFORMS=linux/amd64,linux/arm64 IMAGE_ARGS=--push IMAGE=...
	docker buildx build $(if $(PLATFORMS),--platform $(PLATFORMS),--load) --tag $(IMAGE) $(IMAGE_ARGS) .

lock:  ## regenerate requirements/image.lock (the image's pinned, hashed runtime dependencies) from pyproject.toml
	bash hack/lock.sh

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis .dev-cluster
