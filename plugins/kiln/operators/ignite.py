"""``IgniteCacheWarmOperator``: load a Parquet source into a versioned Ignite cache and switch its alias."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from airflow.sdk import BaseOperator


class IgniteCacheWarmOperator(BaseOperator):
    """Warm ``<cache_name>__<version>`` from ``source`` and point the alias ``cache_name`` at it.

    The work is ``ml_tasks.feature_cache.warm`` (load in ``put_all`` batches, verify count and a sample,
    switch the alias with one put, drop versions beyond ``retain``); this operator only connects.

    :param source: Parquet file or folder (templated).
    :param cache_name: the alias readers resolve (templated).
    :param version_prefix: sorts versions oldest-first, e.g. the partition date (templated).
    """

    template_fields: Sequence[str] = ("source", "cache_name", "version_prefix", "key")
    ui_color = "#2a9d8f"

    def __init__(
        self,
        *,
        source: str,
        cache_name: str,
        version_prefix: str = "",
        key: str = "entity_id",
        batch_size: int = 1000,
        retain: int = 2,
        backups: int | None = None,
        expiry_seconds: float | None = None,
        ignite_conn_id: str = "ignite_default",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.source = source
        self.cache_name = cache_name
        self.version_prefix = version_prefix
        self.key = key
        self.batch_size = batch_size
        self.retain = retain
        self.backups = backups
        self.expiry_seconds = expiry_seconds
        self.ignite_conn_id = ignite_conn_id

    def execute(self, context: Any) -> dict[str, Any]:
        from kiln.hooks.ignite import IgniteHook
        from ml_tasks.feature_cache import WarmOptions, warm

        options = WarmOptions(batch_size=self.batch_size, retain=self.retain, backups=self.backups,
                              expiry_seconds=self.expiry_seconds)
        with IgniteHook(self.ignite_conn_id).get_client() as client:
            return warm(client, self.cache_name, Path(self.source), key=self.key, options=options,
                        version_prefix=self.version_prefix, progress=self.log.info)
