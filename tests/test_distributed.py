"""Scale-out training: ``TorchDistributor`` in local mode, 2 CPU processes (DDP over gloo)."""

from __future__ import annotations

import json

import pytest

from tests.builders import tiny_config, tiny_frame, tiny_taxonomy, tmp_root
from vtag.models.data import write_dump


@pytest.mark.spark
@pytest.mark.slow
def test_torch_distributor_local_two_processes_writes_a_loadable_bundle(spark, tiny_taxonomy_path):
    from vtag.models.distributed import run_distributed
    from vtag.models.predictor import Predictor

    root = tmp_root()
    frame = tiny_frame()
    write_dump(frame, root / "dump", "2024-05-01")
    val = tiny_frame(16, seed=3)  # an explicit validation dump (vtag train --val-data), one day of two
    write_dump(val, root / "val", "2024-05-02")
    write_dump(tiny_frame(8, seed=4), root / "val", "2024-05-03")
    # text + context only: each torchrun worker then skips importing timm/torchvision (CPU-bound here)
    cfg = tiny_config(epochs=2, batch_size=8)
    cfg["modalities"] = ["text", "context"]
    res = run_distributed(cfg, str(root / "dump"), root / "bundle", num_processes=2, local_mode=True,
                          use_gpu=False, taxonomy=tiny_taxonomy_path, threads=1, val_data=str(root / "val"),
                          val_dates="2024-05-02")
    assert res["world_size"] == 2 and res["stopped"] == "epochs"
    assert res["val_rows"] == len(val) and res["train_rows"] == len(frame)  # every training row trains
    assert res["metrics"]["shipped"]["n"] == len(val)
    per_rank = -(-res["train_rows"] // 2)
    assert res["steps"] == 2 * -(-per_rank // 8)  # each rank trained on half of every epoch
    assert [h["epoch"] for h in res["history"]] == [1, 2]
    p = Predictor.load(root / "bundle", device="cpu", expected_taxonomy_version=tiny_taxonomy().version)
    assert p.model_version == res["model_version"]
    out = p.predict(frame.iloc[:5])
    assert len(out) == 5 and out["leaf_id"].notna().all()
    card = (root / "bundle" / "MODEL_CARD.md").read_text()
    assert "x2" in card  # device: cpu x2
    state = json.loads((root / "bundle" / "checkpoint" / "state.json").read_text())
    assert state["world_size"] == 2


@pytest.mark.parametrize("value,ok", [("1", True), ("2", True), ("0.166", False), (None, False), ("1.5", False),
                                      ("x", False)])
def test_cluster_gpu_training_needs_one_whole_gpu_per_task(value, ok):
    from vtag.models.distributed import check_gpu_task_amount

    if ok:
        check_gpu_task_amount(value)
    else:
        with pytest.raises(ValueError, match="spark.task.resource.gpu.amount=1"):
            check_gpu_task_amount(value)


def test_vtag_train_checks_the_day_lists_before_starting_ranks(tmp_path):
    """``vtag train --processes N`` parses --dates and --val-dates once on the driver (a typo must
    not start N ranks that each fail) and passes --val-data on to them."""
    from vtag.models.train import _arg_parser, main

    base = ["--config", "conf/model/text-context.yaml", "--data", str(tmp_path), "--out", str(tmp_path / "b"),
            "--processes", "2"]
    with pytest.raises(SystemExit, match="vtag train: --dates: "):
        main(_arg_parser().parse_args([*base, "--dates", "2024-13-01"]))
    with pytest.raises(SystemExit, match="vtag train: --val-dates: "):
        main(_arg_parser().parse_args([*base, "--val-data", str(tmp_path), "--val-dates", "yesterday"]))
    with pytest.raises(SystemExit, match="--val-dates selects days of --val-data"):
        main(_arg_parser().parse_args([*base, "--val-dates", "2024-05-01"]))
