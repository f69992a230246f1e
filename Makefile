# Every target sets itself up on a fresh machine: Debian packages, a virtualenv in .venv,
# the CPU build of torch pinned first (so no resolver can swap in a CUDA build), then the project.
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -ec
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
APT_PACKAGES := espeak-ng sox flac dict-devil dict-gcide chromium chromium-driver
# Jane Austen's novels, the synthetic corpus's default text (apt brings R along; we read the data in Python)
APT_TEXT_PACKAGES := r-cran-janeaustenr
TORCH := torch==2.13.0

.PHONY: demo test bench setup system-deps clean

demo: setup
	$(PY) -m asr.demo

test: setup
	$(PY) -m pytest -q

bench: setup
	$(PY) -m bench.inference

setup: system-deps $(STAMP)

system-deps:
	@missing=""; for b in espeak-ng sox flac chromium chromedriver; do command -v $$b >/dev/null || missing="$$missing $$b"; done; \
	[ -f /usr/share/dictd/devil.dict.dz ] || missing="$$missing dict-devil"; \
	[ -f /usr/share/dictd/gcide.dict.dz ] || missing="$$missing dict-gcide"; \
	[ -f /usr/lib/R/site-library/janeaustenr/data/Rdata.rdb ] || missing="$$missing r-cran-janeaustenr"; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages for:$$missing"; \
	  sudo=""; [ "$$(id -u)" -eq 0 ] || sudo=sudo; \
	  $$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq $(APT_PACKAGES); \
	  DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq --no-install-recommends $(APT_TEXT_PACKAGES); \
	fi

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q $(TORCH) 2>&1 | { grep -v "is ignored" || true; }
	$(PY) -c "import torch; assert torch.__version__.startswith('2.13.0'), torch.__version__"
	$(VENV)/bin/pip install -q -e '.[dev]' 2>&1 | { grep -v "is ignored" || true; }
	$(PY) -c "import torch, lhotse, kaldi_native_fbank, sentencepiece, grpc, websockets, soxr, prometheus_client, matplotlib; assert torch.__version__.startswith('2.13.0')"
	$(PY) -m proto.generate
	touch $(STAMP)

clean:
	rm -rf $(VENV) exp .pytest_cache
