"""``bnlab reproduce --set``: a key reaches every experiment that has it; ``NAME.key`` only that one."""

import pytest

from bnlab.cli import _route_overrides, main
from bnlab.errors import BnlabError
from bnlab.experiments import get


def test_unscoped_keys_reach_every_experiment_having_them_and_scoped_keys_one():
    names = ["nn-lr", "nn-width", "rate"]
    routed = _route_overrides(["steps=50", "nn-lr.steps=300", "widths=[10, 20]"], names)
    assert routed["nn-lr"] == ["steps=50", "steps=300"]  # the scoped value comes last and wins
    assert routed["nn-width"] == ["steps=50", "widths=[10, 20]"]
    has_steps = "steps" in get("rate").config.model_fields
    assert routed["rate"] == (["steps=50"] if has_steps else [])


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("no_such_key=1", "no experiment being run has a key 'no_such_key'"),
        ("nn-bogus.steps=3", "unknown experiment"),
        ("nn-width.steps=3", "not among the experiments being run"),
        ("steps", "not of the form"),
    ],
)
def test_bad_set_items_are_one_line_errors(item, message):
    with pytest.raises(BnlabError, match=message):
        _route_overrides([item], ["nn-lr"])


def test_reproduce_rejects_a_bad_set_before_running_anything(tmp_path, capsys):
    code = main(["reproduce", "--only", "nn-lr", "--set", "nn-lr.steps=-1", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "steps" in err
    assert not (tmp_path / "out").exists()
