# Two commands do everything on a fresh root Debian machine: `make demo` and `make test`.
SHELL := /bin/bash
VENV ?= .venv
PYTHON ?= python3
APT_PACKAGES := iproute2 iputils-ping iputils-tracepath conntrack iptables tcpdump procps util-linux kmod
# only `make test` needs these: the HTML report is opened in a real headless browser
TEST_APT_PACKAGES := chromium
PYTEST := $(VENV)/bin/pytest
# xdist workers for the project's tests (labs get per-worker names, so they run side by side)
TEST_WORKERS ?= 2
# extra pytest arguments for `make test`, e.g. PYTEST_ARGS="--junitxml=out.xml -k matrix"
PYTEST_ARGS ?=

.PHONY: install system-packages test-system-packages python-packages demo test unit lab-down clean

install: system-packages python-packages

system-packages test-system-packages:
	@missing=$$(for p in $(if $(filter test-%,$@),$(TEST_APT_PACKAGES),$(APT_PACKAGES)); do \
	  dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" != 0 ]; then echo "netconform: missing Debian packages ($$missing); run make as root to install them" >&2; exit 1; fi; \
	  echo "installing Debian packages: $$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

python-packages: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "netconform needs Python >= 3.11" >&2; exit 1; }
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check -e .
	touch $@

# the report plugin prints the report folder as the run's last line
demo: install
	$(PYTEST) checks/ --lab -n 4 -q

test: install test-system-packages
	$(PYTEST) tests/ -n $(TEST_WORKERS) --dist loadgroup $(PYTEST_ARGS)

unit: install
	$(PYTEST) tests/unit -q

lab-down:
	-$(VENV)/bin/netconform-lab down --all

clean: lab-down
	rm -rf $(VENV) build *.egg-info
