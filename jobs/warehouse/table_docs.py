"""The tag tables' schemas and column comments, by table name (pure: pyarrow and models/schema.py).

The column comments are set when :func:`vtag.jobs.warehouse.tables.ensure_table` creates a table, synced by
:mod:`vtag.jobs.warehouse.catalog` when it registers the tables, and printed in the analysts' docs, so they live
below both (:mod:`vtag.jobs.warehouse.catalog` re-exports these names).
"""

from __future__ import annotations

import pyarrow as pa

from vtag.jobs.warehouse.reasons import reason_list
from vtag.models.schema import (
    MAX_LEVELS,
    QUARANTINE_SCHEMA,
    TAG_RUNS_SCHEMA,
    UPLOADER_PROFILES_SCHEMA,
    VIDEO_TAGS_SCHEMA,
)

TABLE_NAMES = ("video_tags", "video_tags_quarantine", "tag_runs", "uploader_profiles")
SCHEMAS: dict[str, pa.Schema] = {
    "video_tags": VIDEO_TAGS_SCHEMA,
    "video_tags_quarantine": QUARANTINE_SCHEMA,
    "tag_runs": TAG_RUNS_SCHEMA,
    "uploader_profiles": UPLOADER_PROFILES_SCHEMA,
}
PARTITION_COLUMNS = {"video_tags": ("dt",), "video_tags_quarantine": ("dt",), "tag_runs": (), "uploader_profiles": ()}

#: Comments for columns whose field in models/schema.py has no ``doc`` yet (the ``doc`` wins).
COLUMN_NOTES: dict[str, dict[str, str]] = {
    "video_tags": {
        "video_id": "the video's id from the dump; unique within a day",
        "dt": "the dump day (partition column)",
        "leaf_id": "taxonomy id of the primary leaf",
        "path": "taxonomy ids from level 1 down to the primary leaf",
        "path_names": "display names (Chinese) along path",
        **{f"level{i}": f"name of the level-{i} node on the primary path; null past the leaf" for i in range(1, MAX_LEVELS + 1)},
        "score": "confidence of the primary leaf after hierarchy-consistent decoding",
        "tags": "every label kept after constraint decoding (ancestors included): node_id, name, level, score",
        "cover_missing": "true when the cover was absent or undecodable (tagged from text and context only)",
        "taxonomy_version": "content hash of the taxonomy the ids refer to",
        "model_version": "version of the model bundle that tagged the row",
        "run_id": "the run that wrote the row (tag_runs.run_id)",
        "tagged_at": "when the run started (UTC)",
    },
    "video_tags_quarantine": {
        "video_id": "the video's id when it could be read, else null",
        "dt": "the dump day (partition column)",
        "reason": "why the row was not tagged, one code of jobs/warehouse/reasons.py: " + reason_list(),
        "detail": "the particulars of the reason: the column and its length or value, the byte offset, the "
        "parser's or the file's error",
        "run_id": "the run that wrote the row (tag_runs.run_id)",
    },
    "tag_runs": {
        "run_id": "unique id of the run",
        "job": "the job: tag or retag",
        "dt": "the day the run processed",
        "taxonomy_version": "content hash of the run's taxonomy",
        "model_version": "version of the model bundle",
        "rows_read": "rows read from the day's dump",
        "rows_tagged": "rows in video_tags for the day after the run",
        "rows_quarantined": "rows in video_tags_quarantine for the day after the run",
        "started_at": "start of the run (UTC)",
        "finished_at": "end of the run (UTC)",
        "seconds": "wall-clock duration of the run",
        "status": "started (running, or killed: vtag tag --repair), succeeded, failed (nothing of it published, "
        "unless the message says the profile refresh failed after publishing) or killed",
        "message": "the error of a failed run; for tag runs also which uploader profiles were joined and the refresh's counts",
    },
    "uploader_profiles": {
        "uploader_id": "the uploader (dump column uploader_id)",
        "taxonomy_version": "content hash of the taxonomy the node ids belong to (the bundle's)",
        "n_videos": "the uploader's videos counted: tags (score >= profiles.min_score) up to updated_dt, each "
        "by its score (profiles.count: score, an expected count) or as 1, and labeled videos (1 each)",
        "level1_counts": "level-1 node id -> videos (as n_videos counts them) whose primary node lies under it",
        "leaf_counts": "primary node id (video_tags.leaf_id, or labels[0]) -> videos (as n_videos counts them)",
        "updated_dt": "the last video_tags day counted (the refresh's day)",
        "source": "tags when any counted video came from video_tags, else labels",
    },
}

def column_comments(table: str) -> dict[str, str]:
    """Column -> comment for ``table``: the field's ``doc`` in models/schema.py, else :data:`COLUMN_NOTES`.

    Parameters
    ----------
    table
        One of :data:`TABLE_NAMES`.
    """
    out = {}
    notes = COLUMN_NOTES.get(table, {})
    for f in SCHEMAS[table]:
        doc = f.metadata.get(b"doc", b"").decode() if f.metadata else ""
        out[f.name] = doc or notes.get(f.name, "")
    return out
