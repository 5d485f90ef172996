# Two commands do all set-up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SAMPLE := .cache/sample.parquet
UCI := ../shared/data/Online_Retail.xlsx
INPUT ?= $(if $(wildcard $(UCI)),$(UCI),$(SAMPLE))
LAKEHOUSE ?= ./lakehouse

CHROMIUM ?= /usr/bin/chromium
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

AIRFLOW_VENV := .cache/airflow-venv
AIRFLOW_PIN := $(shell sed -n 's/^airflow = \["\(apache-airflow==[0-9.]*\)"\]/\1/p' pyproject.toml)

.PHONY: setup jars browser airflow run test lint dist clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[dev]"
	touch $(STAMP)

jars: $(STAMP)
	$(BIN)/python -m custseg.runtime.jars > /dev/null

setup: $(STAMP) jars

# The dashboard test drives Debian's Chromium (Playwright downloads no browser of its own).
browser:
	@test -x $(CHROMIUM) || { $(SUDO) apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium > /dev/null; }

# Airflow (an optional extra) in its own venv, for the DAG test only.
$(AIRFLOW_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(AIRFLOW_VENV)
	$(AIRFLOW_VENV)/bin/pip install -q --upgrade pip
	$(AIRFLOW_VENV)/bin/pip install -q "$(AIRFLOW_PIN)"
	touch $@

airflow: $(AIRFLOW_VENV)/.installed

$(SAMPLE): | $(STAMP)
	$(BIN)/custseg generate --customers 2000 --out $(SAMPLE) --seed 7

run: setup $(if $(filter $(SAMPLE),$(INPUT)),$(SAMPLE))
	$(BIN)/custseg run --input $(INPUT) --lakehouse $(LAKEHOUSE)

test: setup browser airflow
	$(BIN)/ruff check lib jobs tests bench dags notebooks
	$(BIN)/lint-imports
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check lib jobs tests bench dags notebooks
	$(BIN)/lint-imports

dist: $(STAMP)
	$(BIN)/python -m custseg.runtime.package dist

clean:
	rm -rf $(VENV) .cache dist build lib/*.egg-info
