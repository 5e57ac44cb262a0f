"""Every distillation method, one epoch, on the pairs it applies to: CIFAR ResNets, a WRN pair
and a timm MobileNet student (the CRD table's kinds of pairs), on 32x32 images; methods that
cannot apply to a pair stop at once with one line saying why. Slow (51 cases, 85 s here):
run with ``pytest -m slow tests/test_method_matrix.py``."""

from __future__ import annotations

import pytest

from lepton_exp.app.runner import run_stage
from lepton_exp.distill.registry import method_names
from lepton_exp.errors import ConfigError

PAIRS = {"resnet": ("resnet8", "resnet20"), "wrn": ("wrn_16_1", "wrn_16_2"),
         "mobilenet": ("mobilenetv3_small_100", "resnet20")}
# What cannot apply, and the line that says so (everything else must complete).
REFUSED = {("fsp", "wrn"): "equal channel counts", ("fsp", "mobilenet"): "fsp",
           # the MobileNet's stage maps are a quarter of the teacher's size: ConvReg (AB's
           # connector, as in the CRD code) bridges half, twice or larger only
           ("ab", "mobilenet"): "convreg connector cannot map"}
TEXT_ONLY = {"attn_kl", "attn_mse", "hidden", "embedding"}  # transformers' terms
FAST = ["data=synthetic", "data.image_size=32", "data.num_samples=160", "data.batch_size=16",
        "trainer.max_epochs=1", "teacher.max_epochs=1", "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false", "logger=none"]

# options that shorten a method's run without changing what it computes
SHORTER = {"ab": ["distill.terms.ab.init_epochs=1"], "fsp": ["distill.terms.fsp.init_epochs=1"],
           "ft": ["distill.terms.ft.init_epochs=1"], "crd": ["distill.terms.crd.negatives=64"]}


@pytest.mark.slow
@pytest.mark.parametrize("pair", sorted(PAIRS))
@pytest.mark.parametrize("method", [m for m in method_names() if m not in TEXT_ONLY])
def test_every_method_runs_an_epoch_or_says_why_not(compose_cfg, tmp_path, method, pair):
    student, teacher = PAIRS[pair]
    overrides = [*FAST, f"distill={method}", *SHORTER.get(method, []),
                 f"model={student}" if student.startswith(("resnet", "wrn")) else
                 f"model.name={student}", f"teacher.model.name={teacher}",
                 f"paths.cache_dir={tmp_path.parent / 'matrix-cache'}"]
    if (method, pair) in REFUSED:
        with pytest.raises(ConfigError, match=REFUSED[method, pair]):
            run_stage(compose_cfg(*overrides), run_dir=tmp_path / "run")
        return
    record = run_stage(compose_cfg(*overrides), run_dir=tmp_path / "run")
    assert record["status"] == "completed"
    assert record["metrics"]["epochs"] == 1
    if method != "none":
        assert record["distill_terms"]
