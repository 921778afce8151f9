# Kiln's image: Airflow 3 with the project's DAGs and plugins baked in, ml_tasks, Spark (pyspark + Java 17),
# MXNet, Apache Singa (CPU, compiled from its source release by scripts/build_singa.sh, as `make setup` does),
# pyignite. Every Kiln container runs it: the stage pods, the MXNet roles, serving, streaming, Spark and
# Airflow (docker-compose.yaml, k8s/). Pins come from requirements.txt, the same file `make setup` installs.
#
#   make images      builds it with podman as localhost/kiln/kiln:<version> FROM a Debian bookworm Python
#                    built here (scripts/images.sh: nothing is pulled)
#   docker build --build-context singa_source=../shared/third_party -t kiln/kiln:0.1.0 .
#                    elsewhere, FROM the official python image
ARG PYTHON_IMAGE=python:3.11.7-slim-bookworm

# Singa has no usable wheel: compile it once here; only the wheel goes on.
FROM ${PYTHON_IMAGE} AS singa-build
ARG SINGA_ARCHIVE=apache-singa-4ddb5629.tar.gz
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake g++ make swig protobuf-compiler libprotobuf-dev \
      libgoogle-glog-dev libopenblas-dev python3-dev \
 && rm -rf /var/lib/apt/lists/* \
 && python3 -m venv /opt/venv
WORKDIR /opt/kiln
COPY requirements.txt ./
# numpy first: Singa's Python module compiles against its C headers; Deprecated: singa imports it
RUN /opt/venv/bin/pip install --no-cache-dir $(grep -E '^(numpy|Deprecated)==' requirements.txt) wheel==0.45.1
COPY scripts/build_singa.sh ./scripts/
COPY --from=singa_source ${SINGA_ARCHIVE} /singa-source/
RUN KILN_CACHE_DIR=/wheels KILN_SINGA_SOURCE=/singa-source/${SINGA_ARCHIVE} scripts/build_singa.sh /opt/venv/bin/python

FROM ${PYTHON_IMAGE}
ARG KILN_UID=50000
ENV PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    JAVA_HOME=/usr/lib/jvm/java-17-openjdk-amd64 \
    AIRFLOW_HOME=/opt/airflow \
    AIRFLOW__CORE__DAGS_FOLDER=/opt/kiln/dags \
    AIRFLOW__CORE__PLUGINS_FOLDER=/opt/kiln/plugins \
    AIRFLOW__CORE__LOAD_EXAMPLES=False \
    KILN_DATA_ROOT=/data \
    PYSPARK_PYTHON=/opt/venv/bin/python \
    SPARK_LOCAL_IP=0.0.0.0 \
    KILN_IVY_DIR=/opt/kiln/ivy

# Java for Spark; Singa's runtime libraries; tini reaps the JVMs' children; procps for Spark's scripts.
RUN apt-get update \
 && apt-get install -y --no-install-recommends openjdk-17-jre-headless procps tini \
      libprotobuf32 libgoogle-glog0v6 libopenblas0 libgomp1 libpython3.11 \
 && rm -rf /var/lib/apt/lists/* \
 && python3 -m venv /opt/venv \
 && useradd --uid "${KILN_UID}" --gid 0 --home-dir /home/kiln --create-home kiln \
 && mkdir -p /opt/airflow /data \
 && chown -R "${KILN_UID}:0" /opt/airflow /data

WORKDIR /opt/kiln
COPY requirements.txt pyproject.toml ./
RUN pip install -r requirements.txt
COPY --from=singa-build /wheels /wheels
RUN pip install --no-deps /wheels/singa/*/singa-*.whl && rm -rf /wheels \
 && python -c "from singa import device, layer, model, opt, tensor"
COPY ml_tasks ./ml_tasks
COPY datasets ./datasets
COPY dags ./dags
COPY plugins ./plugins
COPY scripts/spark_stage.py ./scripts/
COPY ignite ./ignite
COPY spark ./spark
# The streaming job's Kafka connector (spark-sql-kafka from Maven Central) is resolved here, once, into the image.
RUN pip install --no-deps -e . && python -m ml_tasks --help > /dev/null \
 && python -c "from ml_tasks.core.spark_session import streaming_session; streaming_session('kiln-resolve').stop()" \
 && chown -R "${KILN_UID}:0" /opt/kiln/ivy

USER ${KILN_UID}
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["airflow", "version"]
