# Kiln's image: Airflow 3 with the project's DAGs and plugins baked in, ml_tasks, Spark (pyspark + Java 17),
# MXNet, pyignite. Used by the Kubernetes pods (KilnPodOperator), the Helm chart values and docker-compose.
# Pins come from requirements.txt, the same file `make setup` installs. Not built on Kiln's CI machines
# (no Docker engine there); tests/test_containers.py checks it offline.
FROM python:3.11.7-slim-bookworm

ARG KILN_UID=50000
ENV PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    JAVA_HOME=/usr/lib/jvm/java-17-openjdk-amd64 \
    AIRFLOW_HOME=/opt/airflow \
    AIRFLOW__CORE__DAGS_FOLDER=/opt/kiln/dags \
    AIRFLOW__CORE__PLUGINS_FOLDER=/opt/kiln/plugins \
    AIRFLOW__CORE__LOAD_EXAMPLES=False \
    KILN_DATA_ROOT=/data \
    PYSPARK_PYTHON=/usr/local/bin/python \
    SPARK_LOCAL_IP=0.0.0.0 \
    KILN_IVY_DIR=/opt/kiln/ivy

RUN apt-get update \
 && apt-get install -y --no-install-recommends openjdk-17-jre-headless procps tini \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --uid "${KILN_UID}" --gid 0 --home-dir /home/kiln --create-home kiln \
 && mkdir -p /opt/airflow /data \
 && chown -R "${KILN_UID}:0" /opt/airflow /data

WORKDIR /opt/kiln
COPY requirements.txt pyproject.toml ./
RUN pip install -r requirements.txt
COPY ml_tasks ./ml_tasks
COPY datasets ./datasets
COPY dags ./dags
COPY plugins ./plugins
COPY scripts ./scripts
COPY ignite ./ignite
COPY spark ./spark
# The streaming job's Kafka connector (spark-sql-kafka from Maven Central) is resolved here, once, into the image.
RUN pip install --no-deps -e . && python -m ml_tasks --help > /dev/null \
 && python -c "from ml_tasks.core.spark_session import streaming_session; streaming_session('kiln-resolve').stop()" \
 && chown -R "${KILN_UID}:0" /opt/kiln/ivy

USER ${KILN_UID}
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["airflow", "version"]
