# Kiln: every target runs from the repo with its own venv (.venv/) and Airflow home (.airflow/).
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := $(CURDIR)/.venv
STAMP := $(VENV)/.kiln-setup-stamp
# Apache Singa's source archive (a path or an https URL of an Apache Singa source release)
export KILN_SINGA_SOURCE ?= $(abspath $(CURDIR)/../shared/third_party/apache-singa-4ddb5629.tar.gz)

export AIRFLOW_HOME := $(CURDIR)/.airflow
export AIRFLOW__CORE__DAGS_FOLDER := $(CURDIR)/dags
export AIRFLOW__CORE__PLUGINS_FOLDER := $(CURDIR)/plugins
export AIRFLOW__CORE__LOAD_EXAMPLES := False
export AIRFLOW__CORE__UNIT_TEST_MODE := False
export AIRFLOW__LOGGING__LOGGING_LEVEL ?= INFO
# Spark stages attach to a long-running Spark Connect server (make spark-connect-up; the demo starts it);
# spark://host:7077 or local[*] here makes each stage a spark-submit of its own instead.
export AIRFLOW_CONN_SPARK_DEFAULT ?= sc://127.0.0.1:15002
export AIRFLOW_CONN_IGNITE_DEFAULT ?= ignite://127.0.0.1:10800
# The events of the streaming DAGs (make kafka-up); the Kafka provider's connection, as JSON.
export KILN_KAFKA_BOOTSTRAP ?= 127.0.0.1:9092
export AIRFLOW_CONN_KAFKA_DEFAULT ?= {"conn_type": "kafka", "extra": {"bootstrap.servers": "$(KILN_KAFKA_BOOTSTRAP)", "group.id": "kiln", "auto.offset.reset": "latest"}}
export KILN_DATA_ROOT ?= $(CURDIR)/data
export PATH := $(VENV)/bin:$(PATH)
export PYSPARK_PYTHON := $(VENV)/bin/python
export SPARK_LOCAL_IP := 127.0.0.1
export PYTHONPATH := $(CURDIR)/plugins

DEMO_DATE ?= $(shell date -u -d yesterday +%F)
PYTEST_ARGS ?=
# Debian packages by group (scripts/system_deps.sh): each target asks for what it runs; silent when installed.
DEPS := deps-core deps-services deps-postgres deps-k8s deps-containers deps-bench deps-test

.PHONY: setup setup-test singa k8s-binaries images $(DEPS) demo test bench bench-quick lint ignite-up ignite-down spark-up spark-down spark-connect-up spark-connect-down kafka-up kafka-down airflow-up airflow-down k8s-up k8s-down clean

# `setup`: what every target needs, and all that `make demo` runs: Java 17 and curl, the venv, Singa, the
# migrated DB. `setup-test` adds what only the tests use: the Kubernetes control plane's binaries and every
# Debian package the tests run (Chromium, kubectl, PostgreSQL, Maven, wrk, strace). Both do nothing when it is
# all there. Singa compiles once per machine (~2.5 min on 2 cores), the control plane too (~8 to 12 min): both
# are cached in ~/.cache/kiln.
setup: deps-core $(STAMP) singa $(AIRFLOW_HOME)/airflow.db

setup-test: setup deps-test k8s-binaries images

$(DEPS): deps-%:
	@scripts/system_deps.sh $*

$(STAMP): requirements.txt pyproject.toml | deps-core
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -r requirements.txt
	$(VENV)/bin/pip install --quiet --no-deps -e .
	touch $@

# Always asked, silent when this source's build is installed: changing KILN_SINGA_SOURCE rebuilds.
singa: $(STAMP)
	@scripts/build_singa.sh $(VENV)/bin/python

# Always asked, silent when built: etcd, kube-apiserver, controller manager, scheduler and kwok; a real node's
# kubelet, kube-proxy and CoreDNS (tools/).
k8s-binaries:
	@scripts/build_k8s.sh > /dev/null
	@scripts/build_k8s.sh node > /dev/null

# Kiln's image and what the real node needs, with podman (scripts/images.sh; nothing is pulled): built once,
# then only when an input changed.
images: deps-containers
	@scripts/images.sh

$(AIRFLOW_HOME)/airflow.db: $(STAMP)
	mkdir -p $(AIRFLOW_HOME)
	airflow db migrate > $(AIRFLOW_HOME)/migrate.log 2>&1 || (tail -20 $(AIRFLOW_HOME)/migrate.log; exit 1)
	touch $@

demo: setup
	scripts/demo.sh $(DEMO_DATE)

test: setup-test
	scripts/run_tests.sh $(PYTEST_ARGS)

# Each figure beside its baseline (same run) and goal; results in bench/results/{full,quick}/ (table + PNG plots).
bench: setup deps-bench deps-postgres deps-k8s k8s-binaries images
	python bench/run.py
	python bench/bench_mxnet.py
	python bench/bench_postgres.py
	python bench/bench_kubernetes.py

bench-quick: setup deps-bench
	python bench/run.py --quick

lint: setup
	ruff check .

ignite-up: setup deps-services
	scripts/ignite.sh up

ignite-down:
	scripts/ignite.sh down

spark-up: setup
	scripts/spark.sh up

spark-down:
	scripts/spark.sh down

spark-connect-up: setup
	scripts/spark_connect.sh up

spark-connect-down:
	scripts/spark_connect.sh down

# One KRaft broker (no ZooKeeper) on 127.0.0.1:9092 from Maven Central jars; its topics survive down/up.
kafka-up: setup deps-services
	scripts/kafka.sh up

kafka-down:
	scripts/kafka.sh down

airflow-up: setup deps-postgres
	scripts/airflow.sh up

airflow-down:
	scripts/airflow.sh down

# A real control plane on loopback and a real node (containerd, kubelet; KILN_K8S_NODE=kwok: a fake one);
# prints the kubeconfig to point kubectl at.
k8s-up: deps-k8s k8s-binaries images
	scripts/k8s.sh up

k8s-down:
	scripts/k8s.sh down

clean:
	rm -rf $(AIRFLOW_HOME) data .ignite/run .spark .spark-connect .k8s .kafka/run .kafka/data
