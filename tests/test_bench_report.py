"""The bench's table: ceilings (a processor without its fold, the end to end run
without folds) are printed beside the targets, as speed-ups, and never judged."""

from __future__ import annotations

from typing import Any

from bench.__main__ import e2e_rows, rows_of
from bench.report import Row


def _drain(rate: float, ratio: float) -> dict[str, Any]:
    return {"events_per_s": rate, "ratio": ratio}


def _e2e(lag: float) -> dict[str, Any]:
    group = {
        "lag_p99_s": lag,
        "lag_p50_s": lag / 2,
        "lag_max_s": lag,
        "caught_up_after_load_s": 0.3,
    }
    return {
        "rate": 5000.0,
        "duration_s": 60.0,
        "lag_target_s": 2.0,
        "worst_group": "raw",
        "worst_lag_p99_s": lag,
        "accepted": 169_785,
        "sender": {"achieved_rate": 2950.0, "requests_per_s": 2438.0},
        "groups": {"raw": group},
    }


def test_the_drain_without_a_fold_is_a_ceiling_printed_as_a_speed_up() -> None:
    shape = {
        "backlog": 116_250,
        "label": "live",
        "baseline": {"events_per_s": 611.0},
        "processors": {"progress": _drain(5360.0, 8.77)},
        "without_fold": _drain(21_699.0, 35.51),
    }
    rows = rows_of({"processors": {"shapes": {"live": shape}}})
    cells = {r.figure.strip(): r.cells() for r in rows}
    assert cells["processor progress: drain 116,250 (live)"][3:] == ["8.8x", ">= 20x", "MISS"]
    ceiling = cells["processor without a fold (read, decode, ledger, ack): same"]
    assert ceiling[1:] == [
        "21,699 events/s",
        "611 (one-at-a-time worker)",
        "35.5x",
        "(ceiling)",
        "",
    ]


def test_the_end_to_end_run_without_folds_is_reported_not_judged() -> None:
    judged = e2e_rows(_e2e(3.0), "live")
    ceiling = e2e_rows(_e2e(3.0), "without folds", ceiling=True)
    assert [r.cells()[-2:] for r in judged] == [["< 2 s", "MISS"], ["< 2 s", "MISS"]]
    assert [r.cells()[-2:] for r in ceiling] == [["(ceiling)", ""], ["(ceiling)", ""]]


def test_a_reported_figure_has_no_verdict_and_a_plain_ratio() -> None:
    row = Row("x", 1.0, "s", "y", 2.0, target="(reported)", passed=False, ratio=0.5)
    assert row.cells()[3:] == ["0.50", "(reported)", ""]
