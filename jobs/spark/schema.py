"""Spark schemas derived from the pyarrow schemas of :mod:`vtag.models.schema` (the single source)."""

from __future__ import annotations

import pyarrow as pa
from pyspark.sql import types as T


def arrow_type_to_spark(t: pa.DataType) -> T.DataType:
    """Map one pyarrow type to Spark's. Raises ``TypeError`` for types vtag never uses."""
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return T.StringType()
    if pa.types.is_binary(t) or pa.types.is_large_binary(t):
        return T.BinaryType()
    if pa.types.is_boolean(t):
        return T.BooleanType()
    if pa.types.is_int32(t):
        return T.IntegerType()
    if pa.types.is_int64(t):
        return T.LongType()
    if pa.types.is_float32(t):
        return T.FloatType()
    if pa.types.is_float64(t):
        return T.DoubleType()
    if pa.types.is_date32(t):
        return T.DateType()
    if pa.types.is_timestamp(t):
        return T.TimestampType()
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return T.ArrayType(arrow_type_to_spark(t.value_type), containsNull=True)
    if pa.types.is_struct(t):
        return T.StructType([arrow_field_to_spark(t.field(i)) for i in range(t.num_fields)])
    if pa.types.is_map(t):
        return T.MapType(arrow_type_to_spark(t.key_type), arrow_type_to_spark(t.item_type), valueContainsNull=True)
    raise TypeError(f"no Spark type for arrow type {t}")


def arrow_field_to_spark(f: pa.Field) -> T.StructField:
    meta = {"comment": f.metadata[b"doc"].decode()} if f.metadata and b"doc" in f.metadata else {}
    return T.StructField(f.name, arrow_type_to_spark(f.type), nullable=f.nullable, metadata=meta)


def to_spark(schema: pa.Schema) -> T.StructType:
    """A Spark ``StructType`` with the same names, order, types and nullability as ``schema``."""
    return T.StructType([arrow_field_to_spark(f) for f in schema])
