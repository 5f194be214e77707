"""Paired statistics over trainer results: the numbers, the pairing, and refusals."""

from __future__ import annotations

import copy
import json
import math
import re
from pathlib import Path

import pytest

from lape_lib.config import TrainConfig
from lape_lib.report import (PUBLISHED, arms_table, compare, compare_arms, factors_table, factors_verdict, load_results, main,
                             markdown_table, verdict)
from lape_lib.stats import holm, paired_difference
from lape_lib.train import train
from test_train import tiny

T_975_DF2 = 4.302652729911275  # Student t quantile, 97.5 %, 2 degrees of freedom (standard tables)


def test_paired_difference_by_hand() -> None:
    d = paired_difference([91.0, 92.0, 93.0], [90.0, 90.0, 90.0])
    assert d["mean"] == pytest.approx(2.0) and d["std"] == pytest.approx(1.0)
    half = T_975_DF2 / math.sqrt(3)
    assert d["ci"] == pytest.approx([2 - half, 2 + half])
    assert d["t"] == pytest.approx(2 * math.sqrt(3))
    # two-sided p for t = 2*sqrt(3) with 2 df: 1 - t / sqrt(t^2 + 2) in closed form
    assert d["p_value"] == pytest.approx(1 - d["t"] / math.sqrt(d["t"] ** 2 + 2))
    assert d["per_seed"] == [1.0, 2.0, 3.0]


def test_one_pair_has_no_interval_and_lengths_must_match() -> None:
    d = paired_difference([91.0], [90.0])
    assert d["mean"] == 1.0 and d["ci"] is None and d["p_value"] is None
    with pytest.raises(ValueError, match="equal, non-zero lengths"):
        paired_difference([1.0, 2.0], [1.0])


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    """Two real (tiny) trainer runs: seeds 0-1 in one, seed 2 in the other."""
    root = tmp_path_factory.mktemp("report")
    for name, seeds in (("a", (0, 1)), ("b", (2,))):
        train(tiny(seeds=seeds, epochs=2, warmup_epochs=1, cooldown_epochs=0, out_dir=str(root / name)))
    return load_results([root / "a", root / "b" / "results.json"])


def test_learning_curves_one_colour_per_join(runs: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from lape_lib.plotting import plot_history

    fig = plot_history(runs[0])
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["chance (25 %)", "learnable-add (2 seeds)", "learnable-lape (2 seeds)"]
    colours = [line.get_color() for line in ax.get_lines()[1:]]
    assert len(ax.get_lines()) == 5 and colours[0] == colours[1] != colours[2] == colours[3]
    assert fig._suptitle.get_text() == "vit_lite_7_4 (depth=1, dim=32, num_heads=2), toy (64 images), 2 epochs, seeds 0, 1"


def test_compare_pairs_seeds_across_runs(runs: list[dict]) -> None:
    (row,) = compare(runs)
    assert row["seeds"] == [0, 1, 2] and row["unpaired"] == []
    arms = {**runs[0]["arms"], **runs[1]["arms"]}
    for item in row["per_seed"]:
        s = item["seed"]
        assert item["add"] == arms[f"learnable-add-s{s}"]["final"]["test_acc"]
        assert item["lape"] == arms[f"learnable-lape-s{s}"]["final"]["test_acc"]
        assert item["difference"] == pytest.approx(item["lape"] - item["add"])
    assert row["difference"]["mean"] == pytest.approx(sum(i["difference"] for i in row["per_seed"]) / 3)
    assert row["add"]["mean"] == pytest.approx(sum(i["add"] for i in row["per_seed"]) / 3)
    assert row["published"] is None  # the toy set has no published figure
    assert len(row["sources"]) == 2 and row["wall_s"] > 0
    env = runs[0]["environment"]
    assert row["devices"] == [env["gpu"] or f"CPU ({env['cpu_threads']} threads)"]


def test_compare_refuses_unfinished_and_duplicate_runs(runs: list[dict]) -> None:
    unfinished = copy.deepcopy(runs[0])
    unfinished["done"] = False
    with pytest.raises(ValueError, match="unfinished"):
        compare([unfinished])
    assert compare([unfinished], allow_unfinished=True)[0]["seeds"] == [0, 1]
    with pytest.raises(ValueError, match="seed 0 .* appears in two runs"):
        compare([runs[0], runs[0]])


def test_other_settings_make_their_own_row(runs: list[dict]) -> None:
    shorter = copy.deepcopy(runs[1])
    shorter["config"]["epochs"] = 1
    overridden = copy.deepcopy(runs[1])
    overridden["config"]["lr"] = 0.5
    rows = compare([runs[0], shorter, overridden])
    assert sorted(len(r["seeds"]) for r in rows) == [1, 1, 2]
    tiny_arch = copy.deepcopy(runs[0])
    tiny_arch["config"]["dataset"] = "cifar10"  # a published model name, but not its architecture
    assert compare([tiny_arch])[0]["published"] is None


def test_unpaired_seed_is_listed_not_counted(runs: list[dict]) -> None:
    run = copy.deepcopy(runs[0])
    del run["arms"]["learnable-lape-s1"]
    (row,) = compare([run])
    assert row["seeds"] == [0] and row["unpaired"] == [1] and row["difference"]["ci"] is None


def paper_setting(**changes: object) -> dict:
    """The config fields of CIFAR-10's published recipe for ViT-Lite-7/4, with ``changes``."""
    from lape_lib.config import RECIPE_FIELDS

    recipe = TrainConfig().to_dict()
    return {**{k: recipe[k] for k in ("model", "dataset", *RECIPE_FIELDS)}, "model_overrides": {}, **changes}


def test_published_figures_and_verdict(runs: list[dict]) -> None:
    run = copy.deepcopy(runs[0])
    short = copy.deepcopy(run)
    short["config"].update(dataset="cifar10", model="vit_lite_7_4", model_overrides={})
    assert compare([short])[0]["published"] is None  # the paper's setting, but 2 epochs on 64 images
    for change in ({"lr": 1e-3}, {"batch_size": 256}, {"n_test": 1000}, {"epochs": 400}, {"mix_off_epoch": None},
                   {"augment": {**paper_setting()["augment"], "randaug_ops": 0}}):
        other = copy.deepcopy(run)
        other["config"].update(paper_setting(**change))
        assert compare([other])[0]["published"] is None, change  # 300 epochs on all images, another recipe
    from lape_lib.config import has_published_recipe

    assert has_published_recipe(paper_setting()) and not has_published_recipe(paper_setting(dataset="toy"))
    run["config"].update(paper_setting(model_overrides={"drop_path_rate": 0.1}))
    for arm in run["arms"].values():  # make LaPE 1 point better on seed 0 and 2 on seed 1
        arm["final"]["test_acc"] = 90.0 + (arm["seed"] + 1 if arm["join"] == "lape" else 0)
    (row,) = compare([run])
    assert row["published"]["add"] == PUBLISHED[("cifar10", "vit_lite_7_4")][0]
    assert compare([run], baseline="lape", treatment="add")[0]["published"] is None  # the paper's numbers are add → lape
    assert row["published"]["difference"] == pytest.approx(94.290 - 93.448, abs=1e-3)
    text = verdict(row)
    assert "+1.50" in text and "paired seeds" in text and "paper's +0.84" in text
    table = markdown_table([row])
    assert table.startswith("| dataset | model | PE | epochs | seeds | add | lape | lape − add (95 % CI) |")
    reversed_row = compare([run], baseline="lape", treatment="add")[0]
    assert "| lape | add | add − lape (95 % CI) |" in markdown_table([reversed_row])  # headed by the arms compared
    with pytest.raises(ValueError, match="one table compares one pair of arms"):
        markdown_table([row, reversed_row])
    assert "| cifar10 | vit_lite_7_4 (drop_path_rate=0.1) | learnable |" in table and "93.45 → 94.29 (+0.84)" in table


def test_cli_writes_json_and_figures(runs: list[dict], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    rows = main([r["path"] for r in runs] + ["--out", str(tmp_path / "s.json"), "--figures", str(tmp_path / "fig" / "toy")])
    saved = json.loads((tmp_path / "s.json").read_text())
    assert saved["rows"][0]["seeds"] == rows[0]["seeds"] and len(saved["verdicts"]) == 1
    assert sorted(p.name for p in (tmp_path / "fig").iterdir()) == ["toy-curves0.png", "toy-curves1.png", "toy-differences.png"]
    assert "| toy | vit_lite_7_4 (depth=1, dim=32, num_heads=2) |" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="no trainer results"):
        main([str(tmp_path / "missing")])


def controls_run(template: dict, accuracies: dict[str, list[float]]) -> dict:
    """A results file like ``template`` whose arms are ``accuracies`` (label -> one accuracy per seed)."""
    run = copy.deepcopy(template)
    arm = next(iter(run["arms"].values()))
    run["arms"] = {}
    for label, accs in accuracies.items():
        for seed, acc in enumerate(accs):
            run["arms"][f"learnable-{label}-s{seed}"] = {**copy.deepcopy(arm), "seed": seed, "join": label.partition("@")[0],
                                                          "arm": label, "final": {"test_acc": acc}}
    return run


# Normalization is worth 2 points on every seed; out of stream and per layer: noise around +0.3 to +0.4.
CONTROLS = {
    "add": [30.0, 31.0, 32.0], "add@1.0": [31.5, 33.0, 33.6], "add_norm": [32.0, 33.0, 34.0],
    "lape_shared": [32.5, 32.6, 34.2], "lape": [33.0, 32.4, 34.9], "lape_parallel": [32.0, 33.9, 34.0],
}


def test_compare_arms_every_arm_against_the_reference_and_the_factor_steps(runs: list[dict]) -> None:
    (row,) = compare_arms([controls_run(runs[0], CONTROLS)])
    assert row["reference"] == "lape" and sorted(row["arms"]) == sorted(CONTROLS)
    assert row["arms"]["add"]["mean"] == pytest.approx(31.0)
    against = row["against_reference"]
    assert "lape" not in against and against["add"]["per_seed"] == pytest.approx([3.0, 1.4, 2.9])  # lape − add
    steps = {f["factor"]: f for f in row["factors"]}
    assert list(steps) == ["normalization", "out of stream", "per layer", "per layer (parallel)", "init scale 1.0"]
    assert [steps[n]["kind"] for n in steps] == ["chain", "chain", "chain", "side", "side"]
    assert steps["normalization"]["per_seed"] == pytest.approx([2.0, 2.0, 2.0]) and steps["normalization"]["p_value"] is None  # no spread
    assert steps["init scale 1.0"]["per_seed"] == pytest.approx([1.5, 2.0, 1.6])
    chain = ("normalization", "out of stream", "per layer")  # the steps add up to lape − add, seed by seed
    for s in range(3):
        assert sum(steps[n]["per_seed"][s] for n in chain) == pytest.approx(row["total"]["per_seed"][s])
    text = factors_verdict(row)
    # Holm over the 4 steps with a p-value (normalization's differences have no spread, so no p)
    assert steps["init scale 1.0"]["p_holm"] == pytest.approx(min(1.0, 4 * steps["init scale 1.0"]["p_value"]))
    assert "init scale 1.0 (add@1.0 − add +1.70 [" in text and ", a side comparison" in text
    assert "Not distinguishable from zero: out of stream (its interval allows anything from -" in text
    # normalization moved every seed by exactly +2: no spread, no test; said so, not called significant
    assert "Not tested (every seed moved by the same amount, so there is no spread to test against): normalization (add_norm − add +2.00)" in text
    assert "Significant before the correction only" not in text
    assert "Against add@1.0, lape − add@1.0 = +0.73 [" in text and "no gap is distinguishable from zero" in text
    assert "| add@1.0 | 3 | 32.70 ± 1.08 | +0.73 [" in arms_table(row)
    table = factors_table(row)
    assert "| out of stream | step of lape − add | lape_shared − add_norm |" in table
    assert "| init scale 1.0 | side comparison | add@1.0 − add |" in table and "| p, Holm |" in table


def test_compare_arms_says_when_the_data_cannot_tell(runs: list[dict]) -> None:
    noisy = {"add": [30.0, 34.0, 31.0], "add_norm": [31.0, 32.0, 33.0], "lape_shared": [33.0, 31.0, 32.0],
             "lape": [31.0, 33.0, 32.5]}
    (row,) = compare_arms([controls_run(runs[0], noisy)])
    assert "No step's 95 % interval excludes zero: at this number of seeds the data can't tell" in factors_verdict(row)
    one_seed = {k: v[:1] for k, v in noisy.items()}
    (row,) = compare_arms([controls_run(runs[0], one_seed)])
    assert "too few paired seeds for intervals" in factors_verdict(row)
    with pytest.raises(ValueError, match=r"reference arm 'lape_parallel' is in none of the runs; their arms are \['add', 'add_norm'"):
        compare_arms([controls_run(runs[0], noisy)], reference="lape_parallel")


def test_cli_prints_the_multi_arm_table_and_factor_figure(runs: list[dict], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "controls.json"
    path.write_text(json.dumps(controls_run(runs[0], CONTROLS)))
    main([str(path), "--out", str(tmp_path / "s.json"), "--figures", str(tmp_path / "fig" / "c"), "--baseline", "add@1.0"])
    out = capsys.readouterr().out
    assert "every arm against lape" in out and "| lape_parallel | 3 |" in out and "| per layer | step of lape − add | lape − lape_shared |" in out
    assert "| toy | vit_lite_7_4 (depth=1, dim=32, num_heads=2) | learnable |" in out  # the add@1.0 -> lape pair table
    saved = json.loads((tmp_path / "s.json").read_text())
    assert saved["arms"][0]["factors"][-1]["factor"] == "init scale 1.0" and len(saved["factor_verdicts"]) == 1
    assert saved["rows"][0]["baseline"] == "add@1.0" and saved["rows"][0]["difference"]["mean"] == pytest.approx(33.433333 - 32.7, abs=1e-4)
    assert (tmp_path / "fig" / "c-factors.png").is_file()


@pytest.mark.parametrize(("content", "needle"), [
    ("{not json", "cannot be read as JSON"),
    ("[1, 2]", "is not a lape_lib.train results file"),
    ('{"arms": {}, "config": {"model": "m"}}', "config has no 'dataset'"),
    ('{"arms": {"a": {"seed": 0}}, "config": {"dataset": "d", "model": "m", "epochs": 1}}', "arm 'a' lacks seed/pe/join/final"),
    # #21: a newer layout is named, not read as an empty table; impossible bookkeeping is named with its field
    ('{"schema": 3, "arms": {}, "config": {"dataset": "d", "model": "m", "epochs": 1}}', "has results schema 3; this lape_lib reads schemas [1, 2]"),
    ('{"arms": {"a": {"seed": 0, "pe": "learnable", "join": "add", "final": {"metrics": {"test_acc": 50}}}}, '
     '"config": {"dataset": "d", "model": "m", "epochs": 1}}', "no arm has a final test_acc"),
    ('{"arms": {"a": {"seed": 0, "pe": "learnable", "join": "add", "final": {"test_acc": 50.0}}}, "config": {"dataset": "d", "model": "m", "epochs": "three"}}', "config.epochs is 'three'; a number of epochs is an integer >= 1"),
    ('{"arms": {"a": {"seed": 0, "pe": "learnable", "join": "add", "final": {"test_acc": 50.0}}}, "config": {"dataset": "d", "model": "m", "epochs": 2.5}}', "config.epochs is 2.5"),
    ('{"arms": {"a": {"seed": 0, "pe": "learnable", "join": "add", "final": {"test_acc": 50.0}}}, "config": {"dataset": "d", "model": "m", "epochs": -3}}', "config.epochs is -3"),
    ('{"arms": {"a": {"seed": 0, "pe": "learnable", "join": "add", "final": {"test_acc": 50.0}}}, "done": "false", "config": {"dataset": "d", "model": "m", "epochs": 1}}', "done is 'false'; it is true or false"),
    ('{"arms": {"a": {"seed": 0, "pe": "learnable", "join": "add", "final": {"test_acc": 50.0}}}, "wall_s": NaN, "config": {"dataset": "d", "model": "m", "epochs": 1}}', "wall_s is nan; a wall time is a finite number"),
])
def test_malformed_results_files_are_named(content: str, needle: str, tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    with pytest.raises(SystemExit, match=re.escape(str(bad)) + ".*" + re.escape(needle)):
        main([str(bad)])


@pytest.mark.parametrize("value", [float("nan"), 1e9, -3.0])
def test_impossible_accuracies_are_refused(value: float, runs: list[dict], tmp_path: Path) -> None:
    run = copy.deepcopy(runs[0])
    next(iter(run["arms"].values()))["final"]["test_acc"] = value
    path = tmp_path / "r.json"
    path.write_text(json.dumps(run))
    with pytest.raises(SystemExit, match=r"has test_acc .*; an accuracy is a percentage in \[0, 100\]"):
        main([str(path)])


def test_an_unknown_baseline_names_the_arms(runs: list[dict]) -> None:
    with pytest.raises(SystemExit, match=r"baseline arm 'addd' is in none of the runs; their arms are \['add', 'lape'\]"):
        main([runs[0]["path"], "--baseline", "addd"])


def test_holm_adjusts_like_the_textbook() -> None:
    # The committed toy study's two significant steps (p 0.018, 0.030) among five: 0.09 and 0.12 after Holm.
    assert holm([0.018, 0.5, 0.030, 0.2, 0.9]) == pytest.approx([0.09, 1.0, 0.12, 0.6, 1.0])
    assert holm([0.04, None, 0.01]) == [pytest.approx(0.04), None, pytest.approx(0.02)]  # None is not in the family
    assert holm([0.01, 0.011]) == pytest.approx([0.02, 0.02]) and holm([]) == []  # made non-decreasing


@pytest.mark.parametrize(("lape", "needle"), [
    ([31.0, 32.2, 33.1], "lape is better than add by 1.10 points (lape − add = +1.10 points, 95 % CI"),
    ([28.9, 29.8, 30.8], "lape is worse than add by 1.17 points (lape − add = -1.17 points, 95 % CI"),
    ([30.5, 31.8, 31.6], "no difference between lape and add is distinguishable from zero (lape − add = +0.30 points"),
])
def test_verdict_for_every_sign_of_the_interval(runs: list[dict], lape: list[float], needle: str) -> None:
    (row,) = compare([controls_run(runs[0], {"add": [30.0, 31.0, 32.0], "lape": lape})])
    text = verdict(row)
    assert needle in text and "by -" not in text
    if "distinguishable" in text:
        assert re.search(r"not detected; the interval allows anything from [+-]\d+\.\d\d to [+-]\d+\.\d\d points", text)


def test_factor_verdict_for_every_sign_and_the_correction(runs: list[dict]) -> None:
    # add@1.0 clearly ahead of lape: said so, not "no gap remains".
    ahead = {**CONTROLS, "add@1.0": [34.0, 33.5, 36.0]}
    (row,) = compare_arms([controls_run(runs[0], ahead)])
    assert row["against_reference"]["add@1.0"]["ci"][1] < 0
    assert "add@1.0 is ahead of lape: changing only the PE's init scale does more than lape here" in factors_verdict(row)
    # lape clearly ahead of add@1.0: a gap remains.
    behind = {**CONTROLS, "add@1.0": [30.5, 30.6, 32.8]}
    (row,) = compare_arms([controls_run(runs[0], behind)])
    assert "a gap remains when only the PE's init scale is changed (lape ahead)" in factors_verdict(row)
    # A step whose interval excludes zero but whose p does not survive Holm's correction is said to be so.
    marginal = {"add": [30.0, 31.0, 32.0, 33.0], "add_norm": [31.0, 31.2, 32.9, 33.5], "lape_shared": [31.3, 30.7, 33.1, 33.4],
                "lape": [31.1, 31.1, 33.2, 33.0], "add@1.0": [30.1, 31.1, 31.9, 33.2]}
    (row,) = compare_arms([controls_run(runs[0], marginal)])
    steps = {f["factor"]: f for f in row["factors"]}
    norm = steps["normalization"]
    assert norm["ci"][0] > 0 and norm["p_value"] < 0.05 <= norm["p_holm"]
    text = factors_verdict(row)
    assert "Significant before the correction only (95 % interval excludes zero): normalization (add_norm − add" in text


def test_the_same_arm_twice_is_refused(runs: list[dict], tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match=re.escape("baseline and treatment are the same arm ('lape')")):
        main([runs[0]["path"], "--baseline", "lape", "--treatment", "lape"])


def test_runs_on_different_data_never_share_a_row(runs: list[dict]) -> None:
    a, b = copy.deepcopy(runs[0]), copy.deepcopy(runs[1])
    a["data_identity"], b["data_identity"] = "sha256:aaa", "sha256:bbb"
    assert len(compare([a, b])) == 2  # the same setting otherwise: pooled when the data is the same
    b["data_identity"] = "sha256:aaa"
    assert len(compare([a, b])) == 1


def test_a_dropout_override_keeps_the_paper_column(runs: list[dict]) -> None:
    run = copy.deepcopy(runs[0])
    run["config"].update(paper_setting(model_overrides={"drop_path": 0.0}))
    assert compare([run])[0]["published"] is not None  # lape_lib's own name for stochastic depth, as timm's drop_path_rate
    run["config"].update(paper_setting(dataset="cifar100", lr=6e-4, warmup_lr=1e-6, mix_off_epoch=None))
    assert compare([run])[0]["published"]["add"] == PUBLISHED[("cifar100", "vit_lite_7_4")][0]  # CIFAR-100's own recipe
    deit = copy.deepcopy(runs[0])
    deit["config"].update({**TrainConfig.deit(batch_size=512, data_root="imagenet").to_dict(), "seeds": [0, 1]})
    assert compare([deit])[0]["published"]["add"] == PUBLISHED[("imagefolder", "timm/deit_tiny_patch16_224")][0]
    deit["config"]["lr"] = 5e-4  # the lr of batch 512 is 5e-4 x 512/512: unchanged; at batch 1024 it must double
    deit["config"]["batch_size"] = 1024
    assert compare([deit])[0]["published"] is None


def test_an_unwritable_out_or_figures_is_an_error_not_a_traceback(runs: list[dict], tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    for flag in ("--out", "--figures"):
        with pytest.raises(SystemExit, match=r"error: cannot write .*give --out a file path and --figures a path prefix"):
            main([runs[0]["path"], flag, str(blocker / "inside" / "s")])


def test_factor_verdict_when_the_total_itself_is_not_distinguishable(runs: list[dict]) -> None:
    flat = {"add": [30.0, 31.0, 32.0], "add_norm": [30.5, 30.8, 32.2], "lape_shared": [30.2, 31.3, 31.8],
            "lape": [30.1, 31.2, 32.0]}
    (row,) = compare_arms([controls_run(runs[0], flat)])
    text = factors_verdict(row)
    assert "itself not distinguishable from zero" in text and "whether any factor moves the accuracy" in text
    assert "which factor carries the difference" not in text


def test_an_equal_shift_on_every_seed_is_not_a_significant_one(runs: list[dict]) -> None:
    """Differences equal up to float rounding (std 2e-15) must not become p = 1e-31."""
    d = paired_difference([31.9, 32.2, 30.1], [29.9, 30.2, 28.1])
    assert d["no_spread"] and d["p_value"] is None and d["ci"] is None and d["mean"] == pytest.approx(2.0)
    (row,) = compare([controls_run(runs[0], {"add": [29.9, 30.2, 28.1], "lape": [31.9, 32.2, 30.1]})])
    assert "every one of the 3 paired seeds differs by the same +2.00 points (lape − add): no spread" in verdict(row)
