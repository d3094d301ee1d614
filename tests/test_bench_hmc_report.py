"""bench/hmc_report.py: the per-data-set table, the Markdown report and the JSON summary."""

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

import hmc_report  # noqa: E402


def _head(mean: float, n_seeds: int = 3) -> dict:
    return {"auprc_mean": mean, "auprc_std": 0.002, "n_seeds": n_seeds, "width": 1, "hidden": 64,
            "epochs": 7, "valid_auprc": mean + 0.01, "auprc": [mean] * n_seeds, "seconds": 12.0}


def _result(name: str, published: dict | None, v1: float, v3: float, n3: int = 3) -> dict:
    return {"dataset": name, "dhmcn_v1": _head(v1), "dhmcn_v3": _head(v3, n3), "published": published,
            "seconds": 30.0, "cpu_seconds": 55.0, "recipe": {"hidden": 64}}


HEADS = ["dhmcn_v1", "dhmcn_v3"]


def test_table_gives_the_distance_to_each_published_figure():
    r = _result("cellcycle_FUN", {"C-HMCNN": 0.255, "HMCN-F": 0.252}, 0.254, 0.250)
    table = hmc_report.format_table(r, HEADS)
    assert "| dhmcn_v1 | 0.254 ± 0.002 | 7 | +0.002 | -0.001 |" in table
    assert "| dhmcn_v3 | 0.250 ± 0.002 | 7 | -0.002 | -0.005 |" in table
    assert table.endswith("runtime 30 s wall, 55 s cpu (all its heads)")


def test_markdown_marks_and_counts_wins_and_lists_unfinished_work():
    done = [_result("spo_FUN", {"C-HMCNN": 0.215, "HMCN-F": 0.211}, 0.216, 0.212, n3=2),
            _result("mine", None, 0.5, 0.6)]
    md = hmc_report.format_markdown(done, HEADS, command="python bench/hmc.py --data x", device="CPU",
                                    seeds=3, pending=["eisen_FUN"], failed={"bad": "dhmcn_v1: ValueError: x"},
                                    skipped=["expr_GO"], note="a note")
    assert "| spo_FUN | 0.216 ± 0.002 ✓✓ | 0.212 ± 0.002 ✓ (2 seeds) | 0.211 | 0.215 |" in md
    assert "| mine | 0.500 ± 0.002 | 0.600 ± 0.002 | – | – |" in md  # no published figure, no mark
    assert "| dhmcn_v1 | 1 | 1 | 1 |" in md and "| dhmcn_v3 | 1 | 0 | 1 |" in md
    assert "**Not finished** (run stopped or still running): eisen_FUN" in md
    assert "**Failed**: bad: dhmcn_v1: ValueError: x" in md
    assert "Skipped (no train or no test file): expr_GO" in md and "- a note" in md
    assert md.index("| mine |") < md.index("| spo_FUN |")  # sorted by name


def test_summary_keeps_mean_and_std_only():
    r = _result("d", None, 0.3, 0.4)
    assert hmc_report.summary(r, HEADS) == {"dataset": "d", "dhmcn_v1": {"auprc_mean": 0.3, "auprc_std": 0.002},
                                            "dhmcn_v3": {"auprc_mean": 0.4, "auprc_std": 0.002}}


def test_device_line_names_the_cpu():
    assert hmc_report.device_description("cpu").startswith("CPU ")
