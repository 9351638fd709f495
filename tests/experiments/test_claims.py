"""The Claim type and its comparison helpers."""

import dataclasses

import numpy as np
import pytest

from bnlab.experiments.claims import Claim, above, below, close_to, fmt, wider_than


def test_claims_are_keyword_only_typed_and_plain():
    with pytest.raises(TypeError):
        Claim("x", "a claim", "q", 1.0, 1.0, True)  # positional construction is refused
    c = Claim(
        id="f1.rate", claim="c", quantity="q", predicted=np.float64(2.0), measured=np.float32(2.5), holds=np.True_
    )
    assert type(c.predicted) is float and type(c.measured) is float and type(c.holds) is bool
    assert c.rel_error == pytest.approx(0.25)
    d = c.to_dict()
    assert set(d) >= {"id", "claim", "quantity", "predicted", "measured", "rel_error", "holds", "detail"}
    assert {"ci_low", "ci_high"} <= set(d) and d["ci_low"] is None
    with pytest.raises(ValueError, match="claim id"):
        Claim(id="Has Spaces", claim="c", quantity="q", predicted=None, measured=1.0, holds=True)
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.holds = False  # type: ignore[misc]
    assert not hasattr(Claim, "from_dict")


def test_close_to_uses_the_larger_of_rtol_and_atol():
    kw = {"id": "x", "claim": "c", "quantity": "q", "predicted": 10.0}
    assert close_to(measured=10.09, rtol=0.01, **kw).holds
    assert not close_to(measured=10.2, rtol=0.01, **kw).holds
    assert close_to(measured=10.2, rtol=0.01, atol=0.25, **kw).holds
    assert not close_to(measured=float("nan"), rtol=1.0, **kw).holds
    assert not close_to(measured=10.0, rtol=0.01, also=False, **kw).holds
    assert close_to(measured=10.09, rtol=0.01, **kw).rel_error == pytest.approx(0.009)


def test_bounds_state_their_bound_as_the_prediction_and_have_no_relative_error():
    kw = {"id": "x", "claim": "c", "quantity": "q"}
    up = above(measured=3.0, bound=2.0, **kw)
    assert up.holds and up.predicted == 2.0 and up.relation == ">" and up.rel_error is None
    assert not above(measured=2.0, bound=2.0, **kw).holds
    assert above(measured=2.0, bound=2.0, strict=False, **kw).holds
    assert below(measured=0.0, bound=0.0, **kw).holds
    assert not below(measured=0.0, bound=0.0, strict=True, **kw).holds
    assert below(measured=0.0, bound=0.0, **kw).relation == "<="


def test_wider_than_holds_only_when_the_bootstrap_interval_excludes_the_margin():
    kw = {"id": "x", "claim": "c", "quantity": "q"}
    baseline = [1.0, 1.1, 0.9, 1.0, 1.05]
    clear = wider_than(values=[3.0, 3.2, 2.9, 3.1, 3.0], baseline=baseline, margin=1.0, **kw)
    assert clear.holds and clear.ci_low > 1.0 and clear.ci_low <= clear.measured <= clear.ci_high
    assert clear.measured == pytest.approx(np.mean(np.array([3.0, 3.2, 2.9, 3.1, 3.0]) - baseline))
    # The mean difference is above the margin but the seeds disagree: the interval reaches below it.
    noisy = wider_than(values=[0.0, 5.0, 0.2, 4.0, 0.1], baseline=[1.0] * 5, margin=0.0, **kw)
    assert noisy.measured > 0 and noisy.ci_low <= 0 and not noisy.holds
    unpaired = wider_than(values=[3.0, 3.1, 2.9], baseline=[1.0, 1.2], paired=False, **kw)
    assert unpaired.holds and "3 and 2 seeds" in unpaired.detail
    one = wider_than(values=[2.0], baseline=[1.0], **kw)
    assert one.ci_low == one.ci_high == 1.0 and one.holds
    assert not wider_than(values=[np.nan, 2.0], baseline=[1.0, 1.0], **kw).holds


def test_fmt_never_leaks_numpy_reprs():
    text = fmt([np.float64(1.2), np.int64(3), 0.001, "unit"])
    assert text == "1.2, 3, 0.001, unit" and "np." not in text
