"""The rules one event must keep, wherever it comes from, and the reasons given when it does not.

The stream (``ml_tasks.features.streaming.parse_events``, in Spark) checks every Kafka message; ingest (``screen``, in
Arrow) checks every row of a day's source against the limits the two paths share (``EventLimits`` in the spec):
an entity id or a text value longer than allowed, an event time too far after the event was received. A broken
rule sets the event aside with the reason (a dead letter, a row of ``_rejected.parquet``), so the same event gets
the same verdict either way and stream and batch still compute the same features. The reasons are ``%``
templates that Spark's ``format_string`` and Python's ``%`` both fill.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from ml_tasks.ingestion.schema import DatasetSchema, is_text

if TYPE_CHECKING:
    import pyarrow as pa

    from ml_tasks.core.spec import EventLimits

NOT_JSON = "value is not a JSON object"
NOT_UTF8 = "value is not UTF-8 text"
TOO_BIG = "value is over the size limit: %d bytes (limit %d)"
MISSING = "%s: missing"
TOO_LONG = "%s: %d characters, over the limit of %d"
IN_THE_FUTURE = "%s: %s is %d s after the event was received (limit %d s)"
NOT_A_TIMESTAMP = "%s: %s is not a timestamp (ISO-8601 or epoch ms)"
NOT_A_NUMBER = "%s: %s is not a number"
NOT_FINITE = "%s: %s is not finite"
REASON_COLUMN = "_reason"


def rule_of(reason: str) -> str:
    """What a reason is about (the column, or the value as a whole): the part before its first colon."""
    return reason.split(":")[0]


def received_for_partition(ds: str) -> datetime:
    """When a day's source rows were received at the latest: the end of their day. Not the time they are read: a
    rerun or a backfill must give a day the same verdicts, and a day's data may be generated for all of it."""
    return datetime.fromisoformat(ds).replace(tzinfo=UTC) + timedelta(days=1)


def _fill(template: str, *values: object) -> pa.Array:
    """``template % values`` row by row, in Arrow: each ``%s``/``%d`` takes a constant or a column (the same
    template the stream fills with Spark's ``format_string``)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    pieces = re.split(r"%[sd]", template)
    parts: list[object] = [pieces[0]]
    for value, piece in zip(values, pieces[1:], strict=True):
        parts += [str(value) if isinstance(value, (str, int, float)) else value.cast(pa.string()), piece]  # type: ignore[attr-defined]
    return pc.binary_join_element_wise(*parts, "")


def screen(table: pa.Table, schema: DatasetSchema, limits: EventLimits, received: datetime) -> pa.Array:
    """Each row's reason to be set aside (null: the row stays), the first rule it breaks in the stream's order.

    Only the limits are checked here, on columns whose type already holds the role (a key of text or integers,
    a timestamp, text categories); a column of the wrong type is validation's to name, for the whole partition.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    rules: list[tuple[pa.Array, pa.Array]] = []  # (breaks, reason), in the stream's order

    def too_long(column: str, limit: int) -> None:
        values = table.column(column)
        if not (is_text(values.type) or pa.types.is_integer(values.type)):
            return
        length = pc.utf8_length(values.cast(pa.string()))
        rules.append((pc.greater(length, limit), _fill(TOO_LONG, column, length, limit)))

    too_long(schema.key, limits.max_key_length)
    if schema.timestamp and pa.types.is_timestamp(table.column(schema.timestamp).type):
        event_time = table.column(schema.timestamp).cast(pa.timestamp("us"))
        after_s = pc.divide(pc.subtract(event_time.cast(pa.int64()), int(received.timestamp() * 1e6)), 1_000_000)
        shown = pc.strftime(event_time.cast(pa.timestamp("s"), safe=False), "%Y-%m-%dT%H:%M:%S")
        rules.append((pc.greater(after_s, limits.max_future_seconds),
                      _fill(IN_THE_FUTURE, schema.timestamp, shown, after_s, limits.max_future_seconds)))
    for column in schema.categorical:
        too_long(column, limits.max_text_length)
    reason = pa.nulls(table.num_rows, pa.string())
    for breaks, text in reversed(rules):  # the first rule broken is the one named
        reason = pc.if_else(pc.fill_null(breaks, False), text, reason)
    return reason
