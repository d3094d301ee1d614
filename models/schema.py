"""The one schema module shared by the generator, the model and the Spark jobs (no Spark import).

``DUMP_SCHEMA`` is the daily UGC dump of DESIGN.md; ``LABELED_SCHEMA`` adds ``labels`` (node ids; by
convention ``labels[0]`` is the primary leaf, the rest are extra tags). ``PREDICTION_SCHEMA`` is what
``Predictor.predict`` returns: the ``video_tags`` columns less the run metadata. ``VIDEO_TAGS_SCHEMA``,
``QUARANTINE_SCHEMA`` and ``TAG_RUNS_SCHEMA`` are the Delta tables. jobs/ derives Spark schemas from
these with ``vtag.jobs.spark.schema.to_spark``.
"""

from __future__ import annotations

import pyarrow as pa

MAX_LEVELS = 5

#: Hard limits used by validation: a field past its limit sends the row to quarantine.
MAX_TITLE_CHARS = 512
MAX_DESCRIPTION_CHARS = 8192
MAX_ID_CHARS = 128
MAX_COVER_BYTES = 8 * 1024 * 1024

DUMP_SCHEMA = pa.schema(
    [
        pa.field("video_id", pa.string(), nullable=False, metadata={"doc": "required, unique within a day"}),
        pa.field("title", pa.string(), metadata={"doc": "Chinese, may be empty"}),
        pa.field("description", pa.string(), metadata={"doc": "may be null"}),
        pa.field("cover", pa.binary(), metadata={"doc": "JPEG/PNG bytes; null when cover_uri is used"}),
        pa.field("cover_uri", pa.string(), metadata={"doc": "path/URI of the cover, resolved via binaryFile"}),
        pa.field("uploader_id", pa.string(), metadata={"doc": "context signal"}),
        pa.field("source_program", pa.string(), metadata={"doc": "context signal, nullable"}),
        pa.field("duration_s", pa.int32(), metadata={"doc": "nullable"}),
        pa.field("upload_ts", pa.timestamp("us", tz="UTC")),
    ]
)

LABELS_FIELD = pa.field("labels", pa.list_(pa.string()), metadata={"doc": "node ids; labels[0] = primary leaf"})
LABELED_SCHEMA = DUMP_SCHEMA.append(LABELS_FIELD)

#: The columns a reader must find (``cover`` / ``cover_uri``: at least one of them).
REQUIRED_DUMP_COLUMNS = ("video_id", "title", "uploader_id", "upload_ts")

TAG_STRUCT = pa.struct(
    [
        pa.field("node_id", pa.string()),
        pa.field("name", pa.string()),
        pa.field("level", pa.int32()),
        pa.field("score", pa.float32()),
    ]
)

PREDICTION_SCHEMA = pa.schema(
    [
        pa.field("video_id", pa.string(), nullable=False),
        pa.field("leaf_id", pa.string()),
        pa.field("path", pa.list_(pa.string())),
        pa.field("path_names", pa.list_(pa.string())),
        *[pa.field(f"level{i}", pa.string()) for i in range(1, MAX_LEVELS + 1)],
        pa.field("score", pa.float32()),
        pa.field("tags", pa.list_(TAG_STRUCT)),
        pa.field("cover_missing", pa.bool_()),
        pa.field("taxonomy_version", pa.string()),
        pa.field("model_version", pa.string()),
    ]
)

RUN_META_FIELDS = [
    pa.field("dt", pa.date32(), nullable=False),
    pa.field("run_id", pa.string(), nullable=False),
    pa.field("tagged_at", pa.timestamp("us", tz="UTC")),
]

VIDEO_TAGS_SCHEMA = pa.schema(
    [PREDICTION_SCHEMA.field("video_id"), RUN_META_FIELDS[0]]
    + [f for f in PREDICTION_SCHEMA if f.name != "video_id"]
    + RUN_META_FIELDS[1:]
)

QUARANTINE_SCHEMA = pa.schema(
    [
        pa.field("video_id", pa.string()),
        pa.field("dt", pa.date32(), nullable=False),
        pa.field("raw", pa.string(), metadata={"doc": "the row as JSON (binary as base64, long fields cut)"}),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("detail", pa.string()),
        pa.field("run_id", pa.string(), nullable=False),
    ]
)

TAG_RUNS_SCHEMA = pa.schema(
    [
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("job", pa.string(), nullable=False),
        pa.field("dt", pa.date32()),
        pa.field("taxonomy_version", pa.string()),
        pa.field("model_version", pa.string()),
        pa.field("rows_read", pa.int64()),
        pa.field("rows_tagged", pa.int64()),
        pa.field("rows_quarantined", pa.int64()),
        pa.field("started_at", pa.timestamp("us", tz="UTC")),
        pa.field("finished_at", pa.timestamp("us", tz="UTC")),
        pa.field("seconds", pa.float64()),
        pa.field("status", pa.string()),
        pa.field("message", pa.string()),
        pa.field("conf", pa.string(), metadata={"doc": "JSON of the job's arguments and Spark conf"}),
    ]
)

# Uploader profiles (DESIGN.md "uploader_profiles"): the category history of an uploader's earlier
# videos. ``level1_counts`` / ``leaf_counts`` map node id -> count (float: weighted or decayed counts
# allowed); leaf_counts are keyed by each video's *primary* node (labels[0], or the tag's leaf_id),
# which may be an internal node for partial labels. ``source``: ``labels`` (labeled data) or ``tags``.
UPLOADER_PROFILES_SCHEMA = pa.schema(
    [
        pa.field("uploader_id", pa.string(), nullable=False),
        pa.field("taxonomy_version", pa.string(), nullable=False),
        pa.field("n_videos", pa.float64()),
        pa.field("level1_counts", pa.map_(pa.string(), pa.float64())),
        pa.field("leaf_counts", pa.map_(pa.string(), pa.float64())),
        pa.field("updated_dt", pa.date32()),
        pa.field("source", pa.string()),
    ]
)

#: Columns the tag job joins onto a day's rows before ``Predictor.predict`` (from ``uploader_profiles``).
#: A row whose ``profile_n_videos`` is null has no table profile: the Predictor then falls back to the
#: bundle's own training-label profile of that uploader, else an empty profile. Without these columns
#: in the frame at all, the bundle's profiles are used for every row.
PROFILE_INPUT_FIELDS = [
    pa.field("profile_n_videos", pa.float64()),
    pa.field("profile_level1_counts", pa.map_(pa.string(), pa.float64())),
    pa.field("profile_leaf_counts", pa.map_(pa.string(), pa.float64())),
]
