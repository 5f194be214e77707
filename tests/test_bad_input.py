"""Bad or hostile input, one case per class: refused early, naming the setting or file, with
nothing the user had changed; and the failure windows of a run (a kill after the last
checkpoint). Damaged checkpoints: test_checkpoint.py; locks and temp files: test_files.py."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from lape_lib.checkpoint import CheckpointMismatchError
from lape_lib.config import TrainConfig
from lape_lib.train import main, train
from test_train import tiny

CLI = ["--dataset", "toy", "--n-train", "32", "--n-test", "16", "--batch-size", "16", "--epochs", "1",
       "--warmup-epochs", "0", "--cooldown-epochs", "0", "--override", "depth=1", "dim=32", "num_heads=2",
       "--joins", "lape", "--no-progress", "--no-augment", "--device", "cpu"]


@pytest.mark.parametrize(("kwargs", "needle"), [
    ({"n_train": -5}, "n_train must be a number of images >= 1, or None for the whole split; got -5"),
    ({"n_train": 0}, "n_train must be a number of images >= 1"),
    ({"n_test": 0}, "n_test must be a number of images >= 1"),
    ({"img_size": 0}, "img_size must be an integer >= 1, got 0"),
    ({"eval_every": 0}, "eval_every must be an integer >= 1, got 0"),
    ({"warmup_lr": float("nan")}, "warmup_lr must be a finite number >= 0, got nan"),
    ({"weight_decay": float("nan")}, "weight_decay must be a finite number >= 0, got nan"),
    ({"device": "foo"}, "unknown device 'foo'; use 'auto', 'cpu', 'cuda' or 'cuda:N'"),
    ({"compile_mode": "nonsense"}, "unknown compile_mode 'nonsense'"),
    ({"out_dir": ""}, "out_dir is empty"),
    ({"model_overrides": {"depth": 0}}, "model setting depth must be an integer >= 1, got 0"),
    ({"model_overrides": {"depth": 1.5}}, "model setting depth must be an integer >= 1, got 1.5"),
    ({"model_overrides": {"dim": 32, "num_heads": 3}}, "dim 32 is not divisible by num_heads 3"),
    ({"model_overrides": {"drop": 1.5}}, "model setting drop is a probability in [0, 1), got 1.5"),
    ({"pes": ("none",), "joins": ("lape",)}, "no (pe, join) combination of pes ['none'] and joins ['lape'] can work"),
])
def test_bad_config_values_name_the_setting(kwargs: dict, needle: str) -> None:
    with pytest.raises(ValueError, match=re.escape(needle)):
        tiny(**kwargs)


@pytest.mark.parametrize("kind", ["file", "devnull"])
def test_an_unusable_out_is_refused_before_any_work(kind: str, tmp_path: Path) -> None:
    target = tmp_path / "a_file.txt"
    target.write_text("keep me")
    out = target if kind == "file" else Path("/dev/null")
    with pytest.raises(SystemExit, match=re.escape(f"output folder {str(out)!r} cannot be created")):
        main(CLI + ["--out", str(out)])
    assert target.read_text() == "keep me"


def test_a_kill_after_the_last_checkpoint_is_finished_by_the_next_run(tmp_path: Path) -> None:
    cfg = tiny(epochs=2, warmup_epochs=0, cooldown_epochs=0, out_dir=str(tmp_path))
    done = train(cfg)
    results = tmp_path / "results.json"
    stranded = json.loads(results.read_text())
    stranded["done"] = False  # as a kill between the final checkpoint and the final results.json leaves it
    results.write_text(json.dumps(stranded))
    again = train(cfg)
    saved = json.loads(results.read_text())
    assert saved["done"] and again["done"]
    assert saved["arms"]["learnable-add-s0"]["final"] == done["arms"]["learnable-add-s0"]["final"]


def test_a_patch_off_the_grid_is_named() -> None:
    import matplotlib

    matplotlib.use("Agg")
    from lape_lib import create_model
    from lape_lib.plotting import plot_layer_similarity

    model = create_model("vit_lite_7_4", depth=1)
    with pytest.raises(ValueError, match=r"patch 9999 is not on lape's 8x8 patch grid; choose 0..63"):
        plot_layer_similarity({"lape": model}, patch=9999)


def test_resuming_with_download_added_is_accepted(tmp_path: Path) -> None:
    """--download changes nothing about what is computed once the data is there."""
    train(tiny(epochs=2, warmup_epochs=0, cooldown_epochs=0, out_dir=str(tmp_path)), stop_after_epochs=1)
    assert train(tiny(epochs=2, warmup_epochs=0, cooldown_epochs=0, out_dir=str(tmp_path), download=True))["done"]


def test_a_nan_in_the_first_epoch_says_no_checkpoint_was_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lape_lib.train import NonFiniteLossError
    from test_train import poison_models

    poison_models(monkeypatch)
    with pytest.raises(NonFiniteLossError, match="at epoch 0; no checkpoint had been written yet") as err:
        train(tiny(out_dir=str(tmp_path)))
    assert not (tmp_path / "checkpoint.pt").exists()
    assert str(err.value).endswith(".") and "fp32" not in str(err.value)  # already fp32 on the CPU: only the lr advice


def test_save_weights_for_a_timm_model_is_refused_before_training() -> None:
    with pytest.raises(ValueError, match="'timm/deit_tiny_patch16_224' is a timm model: leave save_weights off"):
        TrainConfig.deit(data_root=".", save_weights=True)


def test_resuming_onto_other_data_is_refused_and_every_source_is_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """#21: the data's content is part of a run's identity; the same content read from another copy
    resumes, and results.json lists every copy the run read."""
    from dataclasses import replace as dc_replace

    import lape_lib.train as trainer

    cfg = tiny(epochs=2, warmup_epochs=0, cooldown_epochs=0, out_dir=str(tmp_path))
    train(cfg, stop_after_epochs=1)
    real = trainer.load_data
    monkeypatch.setattr(trainer, "load_data", lambda c: dc_replace(real(c), source="toy:elsewhere"))  # same images
    done = train(cfg)
    assert done["done"] and done["data_sources"] == ["toy:quadrant(seed=0)", "toy:elsewhere"]
    assert json.loads((tmp_path / "results.json").read_text())["data_identity"].startswith("sha256:")
    other = tmp_path / "other"
    train(tiny(epochs=2, warmup_epochs=0, cooldown_epochs=0, out_dir=str(other)), stop_after_epochs=1)
    flipped = lambda c: dc_replace(real(c), test_y=3 - real(c).test_y)  # noqa: E731 - other labels, same everything else
    monkeypatch.setattr(trainer, "load_data", flipped)
    with pytest.raises(CheckpointMismatchError, match=r"another configuration \(data: checkpoint 'sha256:[0-9a-f]+' vs now 'sha256:"):
        train(tiny(epochs=2, warmup_epochs=0, cooldown_epochs=0, out_dir=str(other)))


@pytest.mark.parametrize(("kwargs", "needle"), [
    ({"joins": ("add@1.0", "add@1")}, "name the same arm twice ('add@1.0' and 'add@1')"),
    ({"model_overrides": {"mlp_ratio": True}}, "model setting mlp_ratio must be a positive number, got True"),
    ({"dataset": "cifar10", "img_size": 64}, "img_size 64 with dataset 'cifar10': its images are 32 x 32"),
    ({"device": "meta"}, "unknown device 'meta'"),
    ({"seeds": (10**20,)}, "seed 100000000000000000000 is out of range"),
])
def test_more_bad_values_are_refused_before_any_data_is_read(kwargs: dict, needle: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import lape_lib.train as trainer

    monkeypatch.setattr(trainer, "load_data", lambda c: pytest.fail("data read before the config was checked"))
    with pytest.raises(ValueError, match=re.escape(needle)):
        train(tiny(**kwargs))


def test_a_bare_override_is_an_error_not_the_default_model(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        main([*CLI[:CLI.index("--override")], "--override", "--joins", "lape"])
    assert "--override: expected at least one argument" in capsys.readouterr().err
