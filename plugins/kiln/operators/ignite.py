"""``IgniteCacheWarmOperator``: load a Parquet source into a versioned Ignite cache and switch its alias."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from airflow.sdk import BaseOperator


class IgniteCacheWarmOperator(BaseOperator):
    """Warm ``<cache_name>__<version>`` from ``source`` and point the alias ``cache_name`` at it.

    The work is ``ml_tasks.features.feature_cache.warm`` (load in ``put_all`` batches, verify count and a sample,
    switch the alias with one put, drop versions beyond ``retain``); this operator only connects.

    :param source: Parquet file or folder (templated).
    :param cache_name: the alias readers resolve (templated).
    :param version_prefix: sorts versions oldest-first, e.g. the partition date (templated).
    :param batch_size, loaders, retain: entries per ``put_all``, connections loading side by side, versions kept;
        ``WarmOptions``' defaults when not given.
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
        batch_size: int | None = None,
        loaders: int | None = None,
        retain: int | None = None,
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
        self.loaders = loaders
        self.retain = retain
        self.backups = backups
        self.expiry_seconds = expiry_seconds
        self.ignite_conn_id = ignite_conn_id

    def execute(self, context: Any) -> dict[str, Any]:
        from kiln.hooks.ignite import IgniteHook
        from ml_tasks.features.feature_cache import WarmOptions, warm

        given = {"batch_size": self.batch_size, "loaders": self.loaders, "retain": self.retain}
        options = WarmOptions(backups=self.backups, expiry_seconds=self.expiry_seconds,
                              **{k: v for k, v in given.items() if v is not None})  # else WarmOptions' defaults
        hook = IgniteHook(self.ignite_conn_id)
        with hook.get_client() as client:
            return warm(client, self.cache_name, Path(self.source), key=self.key, options=options,
                        version_prefix=self.version_prefix, progress=self.log.info, connect=hook.get_client)
