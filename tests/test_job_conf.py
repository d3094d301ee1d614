"""The typed job configuration (vtag.jobs.config.JobConf): every key declared once, unknown keys refused."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
#: names a job conf goes by in the code; the generator's own knobs (jobs/synth, bench/gen_inprocess.py,
#: bench/data_card.py) are another conf (vtag.jobs.synth.config), read there as ``conf`` / ``world.conf``
JOB_CONF_NAMES = {"conf", "job_conf", "jc", "day_conf", "base_conf", "wh_conf"}
GENERATOR_CONF = ("jobs/synth/", "bench/gen_inprocess.py", "bench/data_card.py")


def _conf_reads(path: Path) -> set[tuple[str, int, str]]:
    """(file, line, key) of every ``<conf>["key"]`` / ``<conf>.get("key", ...)`` with a literal key."""
    rel = path.relative_to(REPO).as_posix()
    names = {"job_conf"} if rel.startswith(GENERATOR_CONF) else JOB_CONF_NAMES
    out = set()

    def is_conf(node: ast.AST) -> bool:
        return (isinstance(node, ast.Name) and node.id in names) or (
            isinstance(node, ast.Attribute) and node.attr in names and not rel.startswith(GENERATOR_CONF))

    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        key = None
        if isinstance(node, ast.Subscript) and is_conf(node.value) and isinstance(node.slice, ast.Constant):
            key = node.slice.value
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get"
              and is_conf(node.func.value) and node.args and isinstance(node.args[0], ast.Constant)):
            key = node.args[0].value
        if isinstance(key, str):
            out.add((rel, node.lineno, key))
    return out


def test_every_key_read_anywhere_is_declared_in_job_conf():
    from vtag.jobs.config import KEYS

    files = [p for d in ("jobs", "airflow_dags", "bench", "tests", "scripts") for p in (REPO / d).rglob("*.py")]
    reads = set().union(*(_conf_reads(p) for p in files if p.name != "test_job_conf.py"))  # its reads fail on purpose
    keys = {k for _, _, k in reads}
    assert {"warehouse", "tag_partitions", "storage_options", "vacuum_listing_parallelism", "publish"} <= keys
    undeclared = sorted((f, n, k) for f, n, k in reads if k not in KEYS and not k.startswith("spark."))
    assert undeclared == [], f"job conf keys read but not declared in JobConf: {undeclared}"


def test_every_declared_key_has_a_type_a_doc_and_a_line_in_each_conf_file():
    from dataclasses import fields

    from vtag.jobs.config import SECTIONS, JobConf
    from vtag.jobs.pipeline.profiles import profile_settings  # noqa: F401  (its section keys are SECTIONS')
    from vtag.jobs.pipeline.publish_guard import PublishSettings

    for f in fields(JobConf):
        assert f.type and f.metadata["doc"], f.name
    assert set(SECTIONS["publish"]) == {f.name for f in fields(PublishSettings)}
    assert set(SECTIONS["profiles"]) == {"enabled", "min_score", "labels_root", "count"}
    for name in ("local.yaml", "cluster.yaml"):
        raw = yaml.safe_load((REPO / "conf" / "jobs" / name).read_text(encoding="utf-8"))
        assert set(raw) == {f.name for f in fields(JobConf)}, name


def test_unknown_keys_are_errors_naming_the_closest_key():
    from vtag.jobs.config import ConfigError, job_conf, load_job_conf

    with pytest.raises(ConfigError, match="'bundel'.*did you mean 'bundle'"):
        load_job_conf(overrides=["bundel=x"])
    with pytest.raises(ConfigError, match="'profiles.min_scor'.*did you mean 'profiles.min_score'"):
        load_job_conf(overrides=["profiles.min_scor=0.7"])
    with pytest.raises(ConfigError, match="'warehose'.* in .*did you mean 'warehouse'"):
        job_conf({"warehose": "/x"}, " in test.yaml")
    conf = load_job_conf()
    with pytest.raises(ConfigError, match="'tag_partition'.*did you mean 'tag_partitions'"):
        conf["tag_partition"]
    with pytest.raises(ConfigError, match="'_run_id'"):  # run metadata is passed as arguments, not conf keys
        conf.get("_run_id")
    with pytest.raises(ConfigError, match="'bundel'"):
        conf["bundel"] = "x"


def test_typed_values_spark_pass_through_and_the_dict_like_reads(tmp_path):
    from vtag.jobs.config import load_job_conf

    f = tmp_path / "job.yaml"
    f.write_text("warehouse: wh\ncatalog_register: 'yes'\nspark:\n  spark.sql.shuffle.partitions: 3\n"
                 "spark.executor.cores: 2\n", encoding="utf-8")
    conf = load_job_conf(f, ["tag_partitions=4", "spark.foo.bar=x", "storage_options.AWS_REGION=eu", "cover_root=null"])
    assert conf.tag_partitions == 4 and conf["tag_partitions"] == 4 and conf.get("tag_partitions") == 4
    assert conf.catalog_register is True and conf.cover_root is None and conf.get("cover_root", "d") == "d"
    assert conf.spark == {"spark.sql.shuffle.partitions": "3", "spark.executor.cores": "2", "spark.foo.bar": "x"}
    assert conf.storage_options == {"AWS_REGION": "eu"}
    assert conf.warehouse == "wh" and conf.app_name == "vtag"  # declared defaults fill what the file omits
    assert dict(conf)["warehouse"] == "wh" and {**conf, "warehouse": "w2"}["warehouse"] == "w2"


def test_vtag_tag_refuses_a_misspelt_conf_key():
    res = subprocess.run([sys.executable, "-m", "vtag.jobs.cli", "tag", "--date", "2026-01-01", "--conf", "bundel=x"],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert res.returncode != 0
    assert "bundel" in res.stderr and "did you mean 'bundle'" in res.stderr, res.stderr
    assert "Traceback" not in res.stderr


def test_the_spark_commands_share_one_declaration_of_the_conf_options():
    import re

    hits = [p.relative_to(REPO).as_posix() for p in (REPO / "jobs").rglob("*.py")
            if re.search(r"add_argument\(\s*\"--(job-conf|conf)\"", p.read_text(encoding="utf-8"))]
    assert sorted(hits) == ["jobs/config.py"], hits
