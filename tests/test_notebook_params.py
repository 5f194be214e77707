"""lape_lib.notebook.check: the validation every notebook runs right after its parameters cell."""

from __future__ import annotations

import pytest

from lape_lib.notebook import SMOKE_ENV, Param, check, smoke_subfolder

SPEC = {
    "model": Param(str, ("a", "b")),
    "joins": Param(list, ("add", "lape"), each=True, smoke=["add"]),
    "lr": Param(float),
    "n_train": Param((int, type(None)), smoke=10, positive=True),
    "output_dir": Param(str, smoke=smoke_subfolder),
}
GOOD = {"model": "a", "joins": ["add", "lape"], "lr": 1, "n_train": None, "output_dir": "runs/nb"}


def test_valid_values_pass_and_ints_become_floats(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SMOKE_ENV, raising=False)
    p = check(GOOD, SPEC, quiet=True)
    assert p.lr == 1.0 and isinstance(p.lr, float)
    assert (p.joins, p.n_train, p.output_dir) == (["add", "lape"], None, "runs/nb")


def test_smoke_mode_swaps_values_and_moves_the_output_folder(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SMOKE_ENV, "1")
    p = check(GOOD, SPEC, quiet=True)
    assert p.joins == ["add"] and p.n_train == 10
    assert p.output_dir == smoke_subfolder("runs/nb") != "runs/nb"  # never a real run's folder
    assert p.model == "a" and p.lr == 1.0  # no smoke value: the notebook's own


@pytest.mark.parametrize(
    "change,needle",
    [
        ({"model": "c"}, "parameter model='c': 'c' is not valid; choose from ['a', 'b']"),
        ({"joins": ["add", "concat"]}, "'concat' is not valid; choose from ['add', 'lape']"),
        ({"lr": "fast"}, "parameter lr='fast' has type str; expected float"),
        ({"n_train": 1.5}, "expected int or None"),
        ({"n_train": True}, "has type bool"),
        ({"n_train": 0}, "parameter n_train=0 must be a positive number or None"),
        ({"n_train": -5}, "parameter n_train=-5 must be a positive number or None"),
    ],
)
def test_bad_values_name_what_is_valid(change: dict, needle: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SMOKE_ENV, raising=False)
    with pytest.raises(ValueError) as err:
        check({**GOOD, **change}, SPEC, quiet=True)
    assert needle in str(err.value)


def test_missing_parameter_lists_the_expected_ones() -> None:
    namespace = {k: v for k, v in GOOD.items() if k != "lr"}
    with pytest.raises(ValueError, match=r"parameter 'lr' is missing; the parameters cell must define \['joins'"):
        check(namespace, SPEC, quiet=True)


def test_join_specs_are_parsed_item_by_item(monkeypatch: pytest.MonkeyPatch) -> None:
    from lape_lib.config import parse_join

    monkeypatch.delenv(SMOKE_ENV, raising=False)
    spec = {"joins": Param(list, each=True, parse=parse_join)}
    assert check({"joins": ["add", "add@1.0", "lape_shared"]}, spec, quiet=True).joins == ["add", "add@1.0", "lape_shared"]
    with pytest.raises(ValueError, match=r"parameter joins=\['add', 'add@x'\]: 'add@x': the PE init std after '@'"):
        check({"joins": ["add", "add@x"]}, spec, quiet=True)
    with pytest.raises(ValueError, match=r"unknown join 'sum' in 'sum'; choose from \('add'"):
        check({"joins": ["sum"]}, spec, quiet=True)


def test_a_misspelt_parameter_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    """papermill injects ``-p epoch 5`` as a new variable: the check names it and the right name."""
    monkeypatch.delenv(SMOKE_ENV, raising=False)
    with pytest.raises(ValueError, match=r"n_trian=5 is not a parameter of this notebook; did you mean 'n_train'\?"):
        check({**GOOD, "n_trian": 5}, SPEC, quiet=True)
    check({**GOOD, "Path": object, "shares": [1], "_": 3}, SPEC, quiet=True)  # other names pass


def test_seed_items_and_minimums(monkeypatch: pytest.MonkeyPatch) -> None:
    from lape_lib.notebook import integer

    monkeypatch.delenv(SMOKE_ENV, raising=False)
    spec = {"seeds": Param(list, each=True, parse=integer), "patch": Param((int, type(None)), minimum=0)}
    assert check({"seeds": [0, 3], "patch": None}, spec, quiet=True).seeds == [0, 3]
    with pytest.raises(ValueError, match=r"parameter seeds=\[1.5\]: 1.5 is not an integer"):
        check({"seeds": [1.5], "patch": 0}, spec, quiet=True)
    with pytest.raises(ValueError, match=r"parameter patch=-1 must be >= 0 or None"):
        check({"seeds": [0], "patch": -1}, spec, quiet=True)


def test_smoke_mode_says_what_it_replaced(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setenv(SMOKE_ENV, "1")
    check({**GOOD, "n_train": 5000}, SPEC)
    assert "n_train = 10   (smoke mode replaced 5000)" in capsys.readouterr().out
