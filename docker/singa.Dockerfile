# The Singa step's image: Apache Singa's official CPU image plus Kiln's ml_tasks, so
# `python -m ml_tasks train-singa ...` trains the Singa candidate on the shared artifact volume.
# Singa's distributed mode is NCCL/MPI all-reduce (opt.DistOpt), not a parameter server.
ARG SINGA_IMAGE=apache/singa:3.1.0-cpu-ubuntu16.04
FROM ${SINGA_IMAGE}

ARG KILN_UID=50000
ENV KILN_DATA_ROOT=/data PYTHONDONTWRITEBYTECODE=1
RUN pip install --no-cache-dir "pyarrow<13" "pandas<2" "scikit-learn<1.1" \
 && useradd --uid "${KILN_UID}" --gid 0 --create-home kiln \
 && mkdir -p /data && chown "${KILN_UID}:0" /data
WORKDIR /opt/kiln
COPY ml_tasks ./ml_tasks
COPY datasets ./datasets
ENV PYTHONPATH=/opt/kiln
USER ${KILN_UID}
ENTRYPOINT ["python", "-m", "ml_tasks"]
CMD ["train-singa", "--help"]
