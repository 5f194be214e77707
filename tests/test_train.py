"""The trainer: schedule, paired batches, resume equivalence, checkpoints, bad input."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from lape_lib.augment import AugmentConfig
from lape_lib.checkpoint import CheckpointMismatchError, load_model
from lape_lib.config import TrainConfig
from lape_lib.train import NonFiniteLossError, lr_at, main, train

TINY = dict(
    model="vit_lite_7_4", model_overrides={"depth": 1, "dim": 32, "num_heads": 2}, dataset="toy", n_train=64,
    n_test=32, epochs=3, warmup_epochs=1, cooldown_epochs=1, batch_size=16, lr=1e-3, progress=False,
    device="cpu", mix_off_epoch=2, augment=AugmentConfig(crop_scale=None, flip=False, randaug_ops=0),
)


def tiny(**kw) -> TrainConfig:
    return TrainConfig(**{**TINY, **kw})


def weights(results: dict) -> dict[str, dict[str, torch.Tensor]]:
    return {k: m.state_dict() for k, m in results["models"].items()}


def assert_same_weights(actual: dict, expected: dict) -> None:
    """Every model of two runs' results holds bit-identical weights."""
    got = weights(actual)
    for name, state in weights(expected).items():
        for key, value in state.items():
            torch.testing.assert_close(got[name][key], value, rtol=0, atol=0, msg=f"{name}.{key}")


def test_schedule_matches_recipe() -> None:
    cfg = TrainConfig()
    assert cfg.total_epochs == 310
    assert lr_at(0, cfg) == pytest.approx(1e-5)
    assert lr_at(5, cfg) == pytest.approx(1e-5 + 5 * (5.5e-4 - 1e-5) / 10)
    assert lr_at(10, cfg) == pytest.approx(1e-5 + 0.5 * (5.5e-4 - 1e-5) * (1 + torch.cos(torch.tensor(torch.pi * 10 / 300)).item()))
    assert lr_at(150, cfg) == pytest.approx((5.5e-4 + 1e-5) / 2)
    assert lr_at(305, cfg) == 1e-5
    lrs = [lr_at(e, cfg) for e in range(10, 300)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))


def test_recipes_by_name_and_by_dataset(monkeypatch: pytest.MonkeyPatch) -> None:
    c100 = TrainConfig.recipe(dataset="cifar100")
    assert (c100.lr, c100.warmup_lr, c100.mix_off_epoch, c100.dataset) == (6e-4, 1e-6, None, "cifar100")
    assert c100.epochs == 300 and c100.batch_size == 128 and c100.weight_decay == 0.06  # the rest is CIFAR-10's
    assert TrainConfig.recipe(dataset="cifar10") == TrainConfig()
    kept = TrainConfig.recipe(dataset="cifar100", lr=None, mix_off_epoch=None, epochs=5, warmup_epochs=1)
    assert (kept.lr, kept.mix_off_epoch, kept.epochs) == (6e-4, None, 5)  # None keeps the recipe's value
    assert TrainConfig.recipe("cifar10", dataset="cifar100").lr == 5.5e-4  # a named recipe wins
    assert TrainConfig(mix_off_epoch=-1).mix_off_epoch is None  # -1 spells "never"
    with pytest.raises(ValueError, match=r"unknown recipe 'imagenet'; choose one of \('cifar10', 'cifar100', 'deit'\)"):
        TrainConfig.recipe("imagenet")
    with pytest.raises(ValueError, match="mix_off_epoch must be an epoch >= 0, or None / -1 for never; got -5"):
        TrainConfig(mix_off_epoch=-5)
    import lape_lib.train as T

    seen: list = []
    monkeypatch.setattr(T, "train", lambda cfg, **kw: seen.append(cfg) or {"arms": {}})
    T.main(["--dataset", "cifar100", "--epochs", "20"])
    assert (seen[-1].lr, seen[-1].mix_off_epoch, seen[-1].epochs) == (6e-4, None, 20)
    T.main(["--dataset", "cifar100", "--lr", "1e-3", "--mix-off-epoch", "-1", "--recipe", "cifar100"])
    assert (seen[-1].lr, seen[-1].mix_off_epoch) == (1e-3, None)


def test_resume_gives_the_same_weights(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    torch.use_deterministic_algorithms(True)
    try:
        straight = train(tiny(out_dir=str(tmp_path / "a")))
        first = train(tiny(out_dir=str(tmp_path / "b")), stop_after_epochs=2)  # "killed" after 2 epochs
        assert not first["done"]
        capsys.readouterr()
        resumed = train(tiny(out_dir=str(tmp_path / "b")))
        assert "after epoch 2 of" in (said := capsys.readouterr().out) and "continuing at epoch 3" in said
        again = train(tiny(out_dir=str(tmp_path / "b")))  # a finished run: says that nothing was trained now
        assert "nothing left to train in this call" in capsys.readouterr().out
    finally:
        torch.use_deterministic_algorithms(False)
    assert resumed["done"] and again["done"]
    assert_same_weights(resumed, straight)
    a = json.loads((tmp_path / "a" / "results.json").read_text())
    b = json.loads((tmp_path / "b" / "results.json").read_text())
    assert [h["train_loss"] for h in a["arms"]["learnable-lape-s0"]["history"]] == [h["train_loss"] for h in b["arms"]["learnable-lape-s0"]["history"]]


def test_fp16_trains_with_a_gradient_scaler_and_resumes(tmp_path: Path) -> None:
    """The T4 path (fp16 autocast + GradScaler), run on CPU: the scaler is live, saved and restored."""
    cfg = dict(epochs=2, cooldown_epochs=0)
    torch.use_deterministic_algorithms(True)
    try:
        fp32 = train(tiny(out_dir=str(tmp_path / "fp32"), **cfg))
        straight = train(tiny(out_dir=str(tmp_path / "a"), precision="fp16", **cfg))
        train(tiny(out_dir=str(tmp_path / "b"), precision="fp16", **cfg), stop_after_epochs=1)
        resumed = train(tiny(out_dir=str(tmp_path / "b"), precision="fp16", **cfg))
    finally:
        torch.use_deterministic_algorithms(False)
    saved = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)
    for name, arm in saved["arms"].items():
        assert arm["scaler"]["scale"] > 1, name  # an enabled scaler; a disabled one saves {}
    plain = weights(fp32)
    for name, state in weights(straight).items():
        assert any(not torch.equal(value, plain[name][key]) for key, value in state.items()), name
    assert_same_weights(resumed, straight)
    assert all(h["train_loss"] == h["train_loss"] for a in resumed["arms"].values() for h in a["history"])  # no NaN


@pytest.mark.parametrize(("capability", "hip", "expected"), [
    ((7, 5), None, torch.float16),   # T4: bf16 is only emulated there, so not "auto"'s choice
    ((7, 0), None, torch.float16),   # V100
    ((8, 0), None, torch.bfloat16),  # A100
    ((9, 0), None, torch.bfloat16),  # H100
    ((9, 0), "6.0", torch.bfloat16),  # ROCm
])
def test_auto_precision_uses_bf16_only_where_the_gpu_has_it(
        monkeypatch: pytest.MonkeyPatch, capability: tuple[int, int], hip: str | None, expected: torch.dtype) -> None:
    from lape_lib.train import resolve_precision

    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)  # what torch says on a T4 too
    monkeypatch.setattr(torch.version, "hip", hip)
    assert resolve_precision("auto", torch.device("cuda")) == expected
    assert resolve_precision("fp16", torch.device("cuda")) == torch.float16
    assert resolve_precision("auto", torch.device("cpu")) == torch.float32


def test_time_limit_ends_on_a_checkpoint_and_resumes(tmp_path: Path) -> None:
    out = str(tmp_path / "run")
    first = main(["--dataset", "toy", "--no-augment", "--n-train", "64", "--n-test", "32", "--epochs", "3",
                  "--warmup-epochs", "1", "--cooldown-epochs", "0", "--batch-size", "16", "--override", "depth=1",
                  "dim=32", "num_heads=2", "--device", "cpu", "--no-progress", "--joins", "add",
                  "--time-limit-minutes", "0.00001", "--out", out])
    assert not first["done"] and len(first["arms"]["learnable-add-s0"]["history"]) == 1  # always one epoch
    assert json.loads((tmp_path / "run" / "results.json").read_text())["done"] is False
    rest = train(TrainConfig(**json.loads((tmp_path / "run" / "results.json").read_text())["config"]), time_limit_s=3600)
    assert rest["done"] and [h["epoch"] for h in rest["arms"]["learnable-add-s0"]["history"]] == [0, 1, 2]


def test_joins_of_one_seed_see_identical_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, list[torch.Tensor]] = {}
    import lape_lib.train as T

    original = T._make_step

    def spy(model, *args, **kwargs):
        step = original(model, *args, **kwargs)

        def wrapped(x, t):
            seen.setdefault(model.join + str(id(model)), []).append(x.clone())
            return step(x, t)

        return wrapped

    monkeypatch.setattr(T, "_make_step", spy)
    train(tiny(epochs=1, warmup_epochs=0, cooldown_epochs=0))
    add, lape = [v for k, v in sorted(seen.items())]
    assert len(add) == len(lape) == 4
    for a, b in zip(add, lape):
        torch.testing.assert_close(a, b)


def test_an_arm_trains_the_same_whichever_arms_share_its_run() -> None:
    # dropout and stochastic depth are on (the model defaults), so this checks their seeding too
    alone = train(tiny(seeds=(1,), joins=("lape",)))
    shared = train(tiny(seeds=(0, 1), joins=("add", "lape")))
    assert set(shared["models"]) == {"learnable-add-s0", "learnable-lape-s0", "learnable-add-s1", "learnable-lape-s1"}
    for key, value in weights(alone)["learnable-lape-s1"].items():
        torch.testing.assert_close(weights(shared)["learnable-lape-s1"][key], value, rtol=0, atol=0, msg=key)


def test_joins_of_one_seed_draw_the_same_dropout_masks(monkeypatch: pytest.MonkeyPatch) -> None:
    import lape_lib.models as M

    masks: dict[str, list[torch.Tensor]] = {}
    original = M.DropPath.forward

    def spy(self, x):
        out = original(self, torch.ones_like(x))  # the scaled keep-mask this call draws
        masks.setdefault(self.owner, []).append(out.detach().clone())
        return original(self, x)

    monkeypatch.setattr(M.DropPath, "forward", spy)
    monkeypatch.setattr(M.DropPath, "owner", "", raising=False)
    import lape_lib.config as C

    build = C.build_model

    def tagged(cfg, pe, join, n):
        model = build(cfg, pe, join, n)
        for m in model.modules():
            if isinstance(m, M.DropPath):
                m.owner = join
        return model

    monkeypatch.setattr(C, "build_model", tagged)
    train(tiny(epochs=1, warmup_epochs=0, cooldown_epochs=0, model_overrides={**TINY["model_overrides"], "depth": 2}))
    assert len(masks["add"]) == len(masks["lape"]) > 0
    for a, b in zip(masks["add"], masks["lape"]):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert any((m == 0).any() for m in masks["add"])  # some samples were dropped: the check is not vacuous


def test_same_seed_same_initial_weights_across_joins() -> None:
    res = train(tiny(epochs=1, warmup_epochs=0, cooldown_epochs=0, lr=1e-12, warmup_lr=1e-12, min_lr=1e-12))
    add, lape = res["models"]["learnable-add-s0"], res["models"]["learnable-lape-s0"]
    torch.testing.assert_close(add.pos_embed.weight, lape.pos_embed.weight, atol=1e-6, rtol=0)
    torch.testing.assert_close(add.head.weight, lape.head.weight, atol=1e-6, rtol=0)


def test_results_json_and_weights(tmp_path: Path) -> None:
    res = train(tiny(epochs=1, warmup_epochs=0, cooldown_epochs=0, out_dir=str(tmp_path), save_weights=True, pes=("sin2d",), joins=("lape",)))
    saved = json.loads((tmp_path / "results.json").read_text())
    arm = saved["arms"]["sin2d-lape-s0"]
    assert saved["done"] and saved["config"]["model"] == "vit_lite_7_4" and saved["data_source"].startswith("toy")
    assert {"epoch", "lr", "train_loss", "test_acc", "images_per_s"} <= set(arm["history"][0])
    assert saved["environment"]["torch"] == torch.__version__
    model = load_model(tmp_path / "sin2d-lape-s0.safetensors")
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(model(x), res["models"]["sin2d-lape-s0"].eval()(x), atol=5e-2, rtol=5e-2)  # fp16 weights


@pytest.mark.parametrize(("kwargs", "needle"), [
    ({"stop_after_epochs": 0}, "stop_after_epochs must be at least 1 (or None: run to the end); got 0"),
    ({"time_limit_s": -60.0}, "the time limit must be a positive number of seconds (or None: no limit); got -60.0"),
    ({"time_limit_s": float("nan")}, "positive number of seconds (or None: no limit); got nan"),
])
def test_bad_call_limits_are_refused_before_any_work(kwargs: dict, needle: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=re.escape(needle)):
        train(tiny(out_dir=str(tmp_path)), **kwargs)
    assert not list(tmp_path.iterdir())


def test_checkpoint_of_another_config_is_refused(tmp_path: Path) -> None:
    train(tiny(epochs=1, warmup_epochs=0, cooldown_epochs=0, out_dir=str(tmp_path)))
    with pytest.raises(CheckpointMismatchError, match=r"lr: checkpoint 0.001 vs now 0.002"):
        train(tiny(epochs=1, warmup_epochs=0, cooldown_epochs=0, out_dir=str(tmp_path), lr=2e-3))


def test_checkpoint_from_before_an_added_option_resumes_at_its_default(tmp_path: Path) -> None:
    from lape_lib.checkpoint import load_checkpoint, save_checkpoint

    cfg = tiny(epochs=2, warmup_epochs=0, cooldown_epochs=0, out_dir=str(tmp_path))
    train(cfg, stop_after_epochs=1)
    state = load_checkpoint(tmp_path / "checkpoint.pt", None)
    older = {k: v for k, v in cfg.fingerprint().items() if k != "stream"}  # as an older version wrote it (no data either)
    save_checkpoint(tmp_path / "checkpoint.pt", {k: v for k, v in state.items() if k not in ("format", "fingerprint")}, older)
    resumed = train(cfg)  # stream was False before it existed
    assert resumed["done"] and len(resumed["arms"]["learnable-lape-s0"]["history"]) == 2
    assert_same_weights(resumed, train(tiny(epochs=2, warmup_epochs=0, cooldown_epochs=0)))  # resumed, not retrained
    with pytest.raises(CheckpointMismatchError, match="stream: checkpoint False vs now True"):
        load_checkpoint(tmp_path / "checkpoint.pt", {**older, "stream": True}, defaults={"stream": False})


def poison_models(monkeypatch: pytest.MonkeyPatch) -> None:
    """Models built from now on emit NaN from their first forward."""
    import lape_lib.train as T

    original = T.build_arms

    def poisoned(*args, **kwargs):
        arms = original(*args, **kwargs)
        for arm in arms:
            arm.model.head.register_forward_hook(lambda m, i, o: o * float("nan"))
        return arms

    monkeypatch.setattr(T, "build_arms", poisoned)


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tiny(epochs=2, warmup_epochs=0, cooldown_epochs=0, out_dir=str(tmp_path))
    train(cfg, stop_after_epochs=1)
    good = (tmp_path / "checkpoint.pt").read_bytes()
    poison_models(monkeypatch)  # the resumed models emit NaN from their next forward on
    with pytest.raises(NonFiniteLossError, match="last good checkpoint"):
        train(cfg)
    assert (tmp_path / "checkpoint.pt").read_bytes() == good


def test_an_arm_may_carry_its_own_pe_init_std(tmp_path: Path) -> None:
    """add@1.0 is add with a std-1.0 PE: its own arm, named apart, recorded in results.json."""
    res = train(tiny(epochs=1, warmup_epochs=0, cooldown_epochs=0, lr=1e-12, warmup_lr=1e-12, min_lr=1e-12,
                     joins=("add", "add@1.0", "add_norm"), pes=("learnable", "sin2d"), out_dir=str(tmp_path)))
    assert sorted(res["arms"]) == ["learnable-add-s0", "learnable-add@1.0-s0", "learnable-add_norm-s0",
                                   "sin2d-add-s0", "sin2d-add_norm-s0"]  # a fixed PE has no init std to set
    default, matched = res["models"]["learnable-add-s0"], res["models"]["learnable-add@1.0-s0"]
    torch.testing.assert_close(matched.pos_embed.weight, 5 * default.pos_embed.weight, atol=1e-5, rtol=1e-5)  # one P, rescaled
    torch.testing.assert_close(default.head.weight, matched.head.weight, atol=1e-6, rtol=0)  # paired: same other weights
    saved = json.loads((tmp_path / "results.json").read_text())["arms"]
    assert saved["learnable-add@1.0-s0"]["join"] == "add" and saved["learnable-add@1.0-s0"]["arm"] == "add@1.0"
    assert saved["learnable-add@1.0-s0"]["pe_init_std"] == 1.0 and saved["learnable-add-s0"]["pe_init_std"] == 0.2
    assert saved["sin2d-add-s0"]["pe_init_std"] is None


@pytest.mark.parametrize(
    "kwargs,needle",
    [
        (dict(model="vit_huge"), "unknown model 'vit_huge'"),
        (dict(joins=("add", "sum")), "unknown join 'sum'"),
        (dict(joins=("add@big",)), "'add@big': the PE init std after '@' must be a positive number"),
        (dict(joins=("add@-1",)), "must be a positive number, e.g. add@1.0; got '-1'"),
        (dict(joins=("lape", "lape")), "joins ['lape', 'lape'] names ['lape'] twice"),
        (dict(seeds=(0, 1, 0)), "seeds [0, 1, 0] names [0] twice"),
        (dict(pes=("rope",)), "unknown pe 'rope'"),
        (dict(dataset="imagenet"), "unknown dataset 'imagenet'"),
        (dict(precision="fp8"), "unknown precision 'fp8'"),
        (dict(epochs=0), "epochs must be >= 1"),
        (dict(augment=AugmentConfig()), "dataset='toy' labels are positions"),
        (dict(warmup_epochs=5, epochs=3), "warmup_epochs (5) must be below epochs (3)"),
    ],
)
def test_bad_config(kwargs: dict, needle: str) -> None:
    with pytest.raises(ValueError) as err:
        tiny(**kwargs)
    assert needle in str(err.value)


def test_batch_larger_than_data() -> None:
    with pytest.raises(ValueError, match="batch_size 128 is larger than the training set"):
        train(tiny(batch_size=128))


def test_cli_runs_and_reports_errors(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    args = ["--dataset", "toy", "--n-train", "32", "--n-test", "16", "--batch-size", "16", "--epochs", "1",
            "--warmup-epochs", "0", "--cooldown-epochs", "0", "--override", "depth=1", "dim=32", "num_heads=2",
            "--joins", "lape", "--no-progress", "--no-augment", "--device", "cpu", "--out", str(tmp_path)]
    main(args)
    assert "learnable-lape-s0" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="unknown model override"):
        main(args[:-2] + ["--override", "depht=1"])
    with pytest.raises(SystemExit, match=r"unknown model override\(s\) \['depht'\]"):  # a second --override adds to the first
        main(args[:-2] + ["--override", "depth=1", "--override", "depht=1"])
    with pytest.raises(SystemExit, match="--time-limit-minutes must be a positive number of minutes; got -3"):
        main(args + ["--time-limit-minutes", "-3"])


def test_without_a_progress_bar_each_epoch_prints_one_line(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    from lape_lib.train import NO_PROGRESS_ENV

    monkeypatch.setenv(NO_PROGRESS_ENV, "1")  # as the workbook runs notebooks: a saved bar would stay frozen
    cfg = tiny(progress=True, joins=("add", "lape"))
    train(cfg)
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("epoch ")]
    n = cfg.total_epochs  # epochs + cooldown
    assert [line.split(" (")[0] for line in lines] == [f"epoch {e}/{n}" for e in range(1, n + 1)]
    assert re.search(r"learnable-add-s0 loss \d+\.\d{3} acc \d+\.\d%, learnable-lape-s0 loss", lines[-1])


def test_checkpoint_every_zero_writes_one_only_when_a_call_ends_early(tmp_path: Path) -> None:
    whole = train(tiny(out_dir=str(tmp_path / "whole")), checkpoint_every=0)
    assert whole["done"] and not (tmp_path / "whole" / "checkpoint.pt").exists()
    assert json.loads((tmp_path / "whole" / "results.json").read_text())["done"] is True
    first = train(tiny(out_dir=str(tmp_path / "cut")), stop_after_epochs=2, checkpoint_every=0)
    assert not first["done"] and (tmp_path / "cut" / "checkpoint.pt").exists()  # stopped early: resumable
    resumed = train(tiny(out_dir=str(tmp_path / "cut")), checkpoint_every=0)
    assert resumed["done"] and len(resumed["arms"]["learnable-lape-s0"]["history"]) == 4
    assert_same_weights(resumed, whole)  # the checkpoint was resumed: a retrain from scratch would differ
    with pytest.raises(ValueError, match=r"checkpoint_every must be an integer >= 0 .*got -1"):
        train(tiny(out_dir=str(tmp_path / "bad")), checkpoint_every=-1)


def test_the_estimate_times_the_runs_own_step(monkeypatch: pytest.MonkeyPatch) -> None:
    import lape_lib.speed as speed

    seen: list[TrainConfig] = []
    real = speed.build_arms
    monkeypatch.setattr(speed, "build_arms", lambda cfg, *a, **k: seen.append(cfg) or real(cfg, *a, **k))
    cfg = tiny(joins=("add", "lape"), seeds=(0, 1), stack_seeds=True, n_train=64)
    est = speed.estimate_minutes(cfg, steps=1)
    assert est["models"] == 4 and len(seen) == 1
    timed = seen[0]
    assert (timed.stack_seeds, timed.compile, timed.cuda_graph, timed.precision, timed.model_overrides, timed.augment) == (
        cfg.stack_seeds, cfg.compile, cfg.cuda_graph, cfg.precision, cfg.model_overrides, cfg.augment)
    assert timed.arms() == cfg.arms() and timed.batch_size == cfg.batch_size


def test_deit_recipe_from_the_command_line(monkeypatch: pytest.MonkeyPatch) -> None:
    import lape_lib.train as T

    seen: list = []
    monkeypatch.setattr(T, "train", lambda cfg, **kw: seen.append(cfg) or {"arms": {}})
    T.main(["--recipe", "deit", "--data-root", "/tmp/x", "--batch-size", "256", "--joins", "lape"])
    cfg = seen[-1]
    assert cfg.model == "timm/deit_tiny_patch16_224" and cfg.img_size == 224 and cfg.joins == ("lape",)
    assert cfg.lr == pytest.approx(5e-4 * 256 / 512) and cfg.weight_decay == 0.05 and cfg.augment.crop_scale == (0.08, 1.0) and cfg.stream
    T.main(["--dataset", "toy", "--no-augment", "--epochs", "20"])
    assert seen[-1].lr == 5.5e-4 and seen[-1].epochs == 20  # the CIFAR recipe stays the default
