"""The embedded Derby metastore of the Hive catalog beside a local warehouse: where it is, whether
another process holds it, and a clear message when it is busy (``vtag catalog register``,
``vtag sql --metastore``). Re-exported by :mod:`vtag.jobs.warehouse.catalog`. No Spark import here.
"""

from __future__ import annotations

import os
from typing import Any


class CatalogError(ValueError):
    """The catalog configuration is invalid or the catalog cannot be reached."""


_BUSY = (
    "the embedded metastore {where}is in use by another Spark process (Derby admits one at a time): "
    "wait for it, or run `vtag query` (DuckDB) or `vtag sql` without --metastore (a session-only catalog)"
)


def local_metastore(conf: dict[str, Any]) -> str | None:
    """The embedded Derby metastore directory a Hive session of ``conf`` uses, when it is local.

    ``vtag.jobs.spark.session`` points ``derby.system.home`` at ``<warehouse>/../.metastore``; Hive's default
    connection URL puts ``metastore_db`` there. None for remote warehouses, other catalogs, or a conf
    that sets its own metastore connection.
    """
    spark_conf = conf.get("spark") or {}
    if spark_conf.get("spark.sql.catalogImplementation", "hive") != "hive":
        return None
    if any("ConnectionURL" in k or "hive.metastore.uris" in k for k in spark_conf):
        return None
    wh = str(conf.get("warehouse") or "./warehouse")
    if "://" in wh and not wh.startswith("file:"):
        return None
    return os.path.join(os.path.dirname(os.path.abspath(wh.removeprefix("file:").rstrip("/"))), ".metastore", "metastore_db")


def check_metastore_free(conf: dict[str, Any]) -> None:
    """Fail early, with a clear message, when another process holds the embedded Derby metastore.

    Derby keeps an exclusive lock on ``dbex.lck`` while a JVM has the database open; trying that lock
    (and letting go at once) tells whether a second session would fail after a minute of JVM start
    and a screenful of stack traces.
    """
    import fcntl

    db = local_metastore(conf)
    if not db:
        return
    lock = os.path.join(db, "dbex.lck")
    try:
        fd = os.open(lock, os.O_RDWR)
    except OSError:  # no database yet, or not ours to lock: let Spark try
        return
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        raise CatalogError(_BUSY.format(where=f"{db} ")) from None
    else:
        fcntl.lockf(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _metastore_hint(exc: Exception) -> Exception:
    text = str(exc)
    if any(k in text for k in ("Derby", "XSDB6", "metastore_db", "SessionHiveMetaStoreClient")):
        return CatalogError(_BUSY.format(where=""))
    return exc
