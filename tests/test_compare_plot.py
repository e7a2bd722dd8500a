"""``rlobs compare`` (grouped returns across seeds) and ``rlobs plot`` (a run on a PNG)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from rlobs import Hub, RlobsError
from rlobs._cli import main
from rlobs._compare import compare
from rlobs._curves import Spread, t95
from rlobs._plot import run_figure
from rlobs._reader import read_run

PNG = b"\x89PNG\r\n\x1a\n"


def _write_run(directory: Path, algo: str, seed: int, returns: list[float],
               spans: bool = False) -> Path:
    """A run whose episodes (each 4 steps) have exactly the given returns."""
    with Hub(["jsonl"], heartbeat_s=0, handle_signals=False, provenance=False,
             env={"RLOBS_JSONL_DIR": str(directory)}) as hub, \
            hub.run(f"{algo}-s{seed}", params={"seed": seed}, tags={"algo": algo}) as run:
        for ret in returns:
            for t in range(4):
                if spans:
                    with run.span("actor.forward"):
                        pass
                run.step(ret / 4, done=(t == 3))
    return directory / f"{run.run_id}.jsonl"


@pytest.fixture
def two_algos(tmp_path: Path) -> Path:
    runs = tmp_path / "runs"
    for seed, shift in enumerate((0.0, 1.0, 2.0)):
        _write_run(runs, "a", seed, [shift] * 5 + [10 + shift] * 10)
        _write_run(runs, "b", seed, [20 + shift] * 15)
    return runs


def test_spread_uses_sample_std_and_t_interval() -> None:
    """Three values 1, 2, 3: mean 2, std 1, 95% half-width t(2)·1/√3."""
    spread = Spread.of([1.0, 2.0, 3.0])
    half = 4.303 / math.sqrt(3)
    assert (spread.mean, spread.std) == (2.0, 1.0)
    assert spread.low == pytest.approx(2 - half) and spread.high == pytest.approx(2 + half)


def test_t_values_are_conservative_between_table_rows() -> None:
    """df 35 uses df 30's value; large df tends to 1.96."""
    assert (t95(35), t95(1000)) == (2.042, 1.960)


def test_compare_groups_runs_by_tag(two_algos: Path) -> None:
    """Final = mean of last N episodes per run; group mean and std across seeds."""
    groups, skipped = compare([two_algos], "algo", last=10)
    by = {g.group: g for g in groups}
    assert skipped == [] and sorted(by) == ["a", "b"]
    assert [len(by[k].runs) for k in "ab"] == [3, 3]
    assert by["a"].final.mean == pytest.approx(11.0) and by["a"].final.std == pytest.approx(1.0)
    assert by["a"].mean.mean == pytest.approx((5 * 1.0 + 10 * 11.0) / 15)
    assert by["b"].final.mean == pytest.approx(21.0)


def test_compare_by_param_and_unset_key(two_algos: Path) -> None:
    """Params group too; runs without the key fall in one '(unset)' group."""
    groups, _ = compare([two_algos], "seed")
    assert [g.group for g in groups] == ["0", "1", "2"]
    _write_run(two_algos, "c", 9, [1.0])
    with Hub(["jsonl"], heartbeat_s=0, handle_signals=False, provenance=False,
             env={"RLOBS_JSONL_DIR": str(two_algos)}) as hub, hub.run("plain") as run:
        run.step(1.0, done=True)
    groups, _ = compare([two_algos], "seed")
    assert {g.group: len(g.runs) for g in groups}["(unset)"] == 1


def test_compare_by_a_key_no_run_has_suggests_one(
        two_algos: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A misspelt --by key is an error naming the close key, not one '(unset)' group."""
    assert main(["compare", str(two_algos), "--by", "alog"]) == 2
    err = capsys.readouterr().err
    assert "no run has a tag or param 'alog'" in err and "did you mean 'algo'?" in err
    assert "algo, seed" in err and "Traceback" not in err


def test_compare_cli_prints_table_and_plots(two_algos: Path, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    """The command prints one row per group with ± and the interval, and writes a PNG."""
    out = tmp_path / "curves.png"
    assert main(["compare", str(two_algos), "--by", "algo", "--plot", str(out)]) == 0
    text = capsys.readouterr().out
    assert "11 ± 1" in text and "21 ± 1" in text and "[8.516, 13.48]" in text
    assert out.read_bytes().startswith(PNG)


def test_compare_skips_runs_without_episodes(tmp_path: Path) -> None:
    """A run with no episode (a sweep parent) is reported as skipped, not averaged."""
    runs = tmp_path / "runs"
    empty = _write_run(runs, "a", 0, [])
    _write_run(runs, "a", 1, [1.0])
    groups, skipped = compare([runs], "algo")
    assert skipped == [empty] and groups[0].final.mean == 1.0


def test_compare_rejects_bad_last(two_algos: Path) -> None:
    """``--last 0`` is a clear error."""
    with pytest.raises(RlobsError, match="--last"):
        compare([two_algos], "algo", last=0)


def test_plot_writes_a_png_with_all_panels(tmp_path: Path) -> None:
    """``rlobs plot`` draws a run with steps, episodes and spans to the given file."""
    run = _write_run(tmp_path / "runs", "a", 0, [1.0, 2.0, 3.0] * 5, spans=True)
    out = tmp_path / "reward.png"
    assert main(["plot", str(run), "-o", str(out)]) == 0
    assert out.read_bytes().startswith(PNG) and out.stat().st_size > 20_000


def test_plot_defaults_beside_the_run_and_handles_no_steps(tmp_path: Path) -> None:
    """Without ``-o`` the PNG goes beside the run file; an empty run still plots."""
    run = _write_run(tmp_path / "runs", "a", 0, [])
    assert main(["plot", str(run)]) == 0
    assert run.with_suffix(".png").read_bytes().startswith(PNG)


def test_plot_draws_losses_and_custom_metrics_on_whole_step_axes(tmp_path: Path) -> None:
    """Each step metric gets a panel, losses first; step and span-count axes are whole."""
    with Hub(["jsonl"], heartbeat_s=0, handle_signals=False, provenance=False,
             env={"RLOBS_JSONL_DIR": str(tmp_path)}) as hub, hub.run("short") as run:
        for i in range(5):
            with run.span("act"):
                pass
            run.step(1.0, {"td_error": 0.1 * i, "policy_loss": 1.0 / (i + 1)},
                     done=(i == 4))
    assert run.log_path is not None
    fig = run_figure(read_run(run.log_path))
    titles = [ax.get_title(loc="left") for ax in fig.axes]
    assert titles == ["step reward", "episode return", "policy_loss", "td_error",
                      "span latency"]
    for ax in fig.axes[:4]:
        ticks = ax.get_xticks()
        assert len(ticks) > 1 and all(float(t).is_integer() for t in ticks), ticks
    assert all(float(t).is_integer() for t in fig.axes[4].get_yticks())
