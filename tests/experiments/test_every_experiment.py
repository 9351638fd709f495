"""Every registered experiment, on a minute config: ``--device`` reaches every computation, and every claim it
emits has a unique id defined in docs/claims.md, with no numpy reprs in its text.

The device check is a spy: every function of the ``ols`` and ``nn`` layers that takes a ``device`` (``gd``,
``bngd``, ``train``, ...) is wrapped where the experiments import it, and each call must pass the requested
device explicitly. The device asked for is ``"cpu:0"``, which computes on the CPU but is not those functions'
default (``None``), so a call that forgets it is caught even on a machine without a GPU.
"""

import inspect
import re
import sys
from pathlib import Path

import pytest

import bnlab.experiments  # noqa: F401  (registers every experiment)
from bnlab.experiments import REGISTRY, run_experiment

DEVICE = "cpu:0"
NN = {"hidden": 8, "num_lr": 5, "seeds": 1, "steps": 4, "log_every": 2, "n_test": 50}
MINUTE = {
    "convergence": {"num_eps": 9, "steps": 20, "seeds": 1, "refine_points": 8, "refine_rounds": 1},
    "phase-diagram": {"num_eps": 5, "eps_a": [0.5, 1.5, 2.5], "steps": 20, "seeds": 1},
    "rate": {"num_eps": 3, "seeds": 1, "steps": 3000},
    "overparam": {
        "dims": [3],
        "kappas": [10.0],
        "spectra": ["log", "spiked"],
        "seeds": 1,
        "rate_d": 3,
        "kappa": 10.0,
        "rate_num_eps": 3,
        "rate_steps": 300,
    },
    "effective-step": {"num_eps": 7, "seeds": 1, "steps": 50, "trace_eps": [1.0]},
    "lr-robustness": {"d": 5, "num_eps": 9, "seeds": 2, "steps": 50, "tol": 0.01},
    "dimension": {
        "dims": [4, 8],
        "spiked_dims": [4, 8],
        "seeds": 1,
        "per_decade": 2,
        "budget": 1,
        "spiked_budget": 1,
        "tol": 0.01,
    },
    "scaling-law": {"steps": 10, "identity_steps": 3},
    "nn-lr": NN,
    "nn-bn-lr": {**NN, "bn_lrs": [1.0, 0.1]},
    "nn-weight-scale": {**NN, "scales": [0.1, 1.0, 10.0]},
    "nn-width": {**NN, "widths": [4, 8]},
    "nn-gamma-init": {**NN, "gamma_inits": [1e-4, 1.0]},
    "nn-optimizer": NN,
    "nn-effective-step": {**NN, "sharpness_every": 2, "lanczos_steps": 3, "hvp_batches": 1},
}
DOCS = Path(__file__).resolve().parents[2] / "docs" / "claims.md"


def _documented_ids() -> list[re.Pattern]:
    """Every id written as code in docs/claims.md; ``<name>`` stands for a value (a scale, say)."""
    ids = re.findall(r"`([a-z0-9-]+\.[a-z0-9.<>-]+)`", DOCS.read_text())
    return [
        re.compile(
            "^" + re.sub(r"<[a-z]+>", "[a-z0-9.+-]+", re.escape(i).replace(r"\<", "<").replace(r"\>", ">")) + "$"
        )
        for i in ids
    ]


@pytest.fixture
def device_calls(monkeypatch):
    """Wrap every device-taking ols/nn function in every experiment module; record (name, device) per call."""
    calls = []

    def spy(name, fn):
        def wrapped(*args, **kwargs):
            calls.append((name, kwargs.get("device")))
            return fn(*args, **kwargs)

        return wrapped

    for module_name, module in list(sys.modules.items()):
        if not module_name.startswith("bnlab.experiments"):
            continue
        for attr, value in list(vars(module).items()):
            origin = getattr(value, "__module__", "") or ""
            if callable(value) and origin.startswith(("bnlab.ols", "bnlab.nn")) and not isinstance(value, type):
                if "device" in inspect.signature(value).parameters:
                    monkeypatch.setattr(module, attr, spy(f"{origin}.{attr}", value))
    return calls


def test_every_experiment_has_a_minute_config():
    assert set(MINUTE) == set(REGISTRY)


@pytest.mark.parametrize("name", sorted(MINUTE))
def test_device_reaches_every_computation_and_claims_are_documented(name, tmp_path, device_calls):
    out = run_experiment(name, tmp_path, "quick", MINUTE[name], device=DEVICE, progress=False)
    assert device_calls, f"{name} made no call to the ols or nn layers"
    leaks = sorted({fn for fn, device in device_calls if device != DEVICE})
    assert not leaks, f"{name} calls {leaks} without the requested device"

    ids = [c.id for c in out.claims]
    assert ids and len(ids) == len(set(ids)), ids
    assert all(i.startswith(f"{name}.") for i in ids), ids  # so ids are unique across experiments too
    documented = _documented_ids()
    assert all(any(p.match(i) for p in documented) for i in ids), [
        i for i in ids if not any(p.match(i) for p in documented)
    ]
    for c in out.claims:
        text = f"{c.claim} {c.quantity} {c.detail}"
        assert "np." not in text and "array(" not in text, text
