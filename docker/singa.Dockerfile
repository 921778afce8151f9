# syntax=docker/dockerfile:1.7
# The Singa step's image: Apache Singa built from source (CPU) by the same script and from the same
# source archive as `make setup`, on the same Debian and Python, plus Kiln's ml_tasks; the
# Kubernetes pod runs `python -m ml_tasks train-singa ...` on the shared artifact volume.
#
#   docker build -f docker/singa.Dockerfile --build-context singa_source=../shared/third_party \
#     -t kiln/kiln-singa:0.1.0 .
#
# Elsewhere, point singa_source at a folder holding an Apache Singa source release and set
# --build-arg KILN_SINGA_SOURCE=/singa-source/<archive>, or set KILN_SINGA_SOURCE to its https URL.
# Distributed Singa (opt.DistOpt: NCCL/MPI all-reduce) needs GPUs: see docs/architecture.md.
ARG PYTHON_IMAGE=python:3.11.7-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ARG KILN_SINGA_SOURCE=/singa-source/apache-singa-4ddb5629.tar.gz
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake=3.25.1-1 g++=4:12.2.0-3 make=4.3-4.1 swig=4.1.0-0.2 \
      protobuf-compiler=3.21.12-3+deb12u1 libprotobuf-dev=3.21.12-3+deb12u1 libgoogle-glog-dev=0.6.0-2 \
      libopenblas-dev=0.3.21+ds-4 curl=7.88.1-10+deb12u14 ca-certificates=20230311+deb12u1 \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/kiln
COPY requirements.txt ./
# numpy first: Singa's Python module compiles against its C headers
RUN pip install --no-cache-dir "$(grep -E '^numpy==' requirements.txt)"
COPY scripts/build_singa.sh ./scripts/
COPY --from=singa_source . /singa-source/
RUN KILN_CACHE_DIR=/wheels KILN_SINGA_SOURCE=${KILN_SINGA_SOURCE} scripts/build_singa.sh /usr/local/bin/python

FROM ${PYTHON_IMAGE}
ARG KILN_UID=50000
ENV KILN_DATA_ROOT=/data PYTHONDONTWRITEBYTECODE=1 PIP_NO_CACHE_DIR=1 PYTHONPATH=/opt/kiln
RUN apt-get update \
 && apt-get install -y --no-install-recommends libprotobuf32=3.21.12-3+deb12u1 libgoogle-glog0v6=0.6.0-2 \
      libopenblas0=0.3.21+ds-4 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --uid "${KILN_UID}" --gid 0 --create-home kiln \
 && mkdir -p /data && chown "${KILN_UID}:0" /data
WORKDIR /opt/kiln
COPY requirements.txt ./
# what ml_tasks needs to train and evaluate, at requirements.txt's pins (no Airflow, Spark or MXNet here)
RUN pip install $(grep -E '^(numpy|pandas|pyarrow|scikit-learn|PyYAML|pydantic|jsonschema|Deprecated)==' requirements.txt)
COPY --from=build /wheels /wheels
RUN pip install --no-deps /wheels/*/singa-*.whl && python -c "from singa import device, layer, model, opt, tensor"
COPY ml_tasks ./ml_tasks
COPY datasets ./datasets
USER ${KILN_UID}
ENTRYPOINT ["python", "-m", "ml_tasks"]
CMD ["train-singa", "--help"]
