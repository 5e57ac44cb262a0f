"""int8 quantization: the functions on small models (what runs int8, bytes, exported files that
reload to the same predictions, QAT that trains), then the quant step of real runs."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from lepton_exp.app.runner import run_stage
from lepton_exp.errors import ConfigError
from lepton_exp.measure import state_bytes
from lepton_exp.quant import dynamic, pt2e
from lepton_exp.quant.coverage import coverage_summary
from lepton_exp.models.taps import positional
from lepton_exp.quant.export import export_quantized, load_quantized


def small_cnn() -> nn.Module:
    import timm

    import lepton_exp.models.families.cifar_resnet  # noqa: F401 - registers resnet8

    torch.manual_seed(0)
    return timm.create_model("resnet8", num_classes=10, in_chans=1).eval()


def images(count: int = 32) -> torch.Tensor:
    return torch.randn(count, 1, 8, 8, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def static_model():
    model = small_cnn()
    calibration = list(images(64).split(16))
    return model, pt2e.quantize_static(model, calibration)


def weighted_layers(model: nn.Module) -> list[str]:
    return [name for name, module in model.named_modules()
            if isinstance(module, (nn.Conv2d, nn.Linear))]


def test_static_int8_quantizes_every_conv_and_linear_and_stores_int8_weights(static_model):
    model, quantized = static_model
    layers = pt2e.layer_coverage(quantized)
    assert sorted(layers) == sorted(weighted_layers(model))
    assert all(layer["runs"] == "int8" for layer in layers.values())
    int8_bytes = sum(t.numel() for t in quantized.state_dict().values() if t.dtype == torch.int8)
    weights = sum(m.weight.numel() for n, m in model.named_modules() if n in layers)
    assert int8_bytes == weights  # one byte per weight: every weight is stored as int8
    # float32 -> int8 weights, plus per-channel scales and float biases
    assert 3.0 < state_bytes(model) / state_bytes(quantized) < 4.0


def test_static_int8_predicts_like_the_float_model(static_model):
    model, quantized = static_model
    inputs = images(64)
    with torch.no_grad():
        reference, int8 = model(inputs), quantized(inputs)
    assert (reference.argmax(1) == int8.argmax(1)).float().mean() >= 0.9
    assert (int8 - reference).abs().max() < 0.1 * reference.abs().max()


def test_exported_int8_graph_reloads_to_the_same_predictions(static_model, tmp_path):
    _, quantized = static_model
    path = export_quantized(quantized, images(2), tmp_path / "model_int8")
    assert path.suffix == ".pt2"
    reloaded = load_quantized(path)
    inputs = images(5)  # another batch size than the export's example
    with torch.no_grad():
        assert torch.equal(reloaded(inputs), quantized(inputs))


def test_lowered_int8_kernels_compute_what_the_int8_graph_computes(static_model):
    _, quantized = static_model
    inputs = images(4)
    lowered = pt2e.lower_to_x86(quantized, inputs)
    with torch.no_grad():
        expected, got = quantized(inputs), lowered(inputs)
    assert (expected.argmax(1) == got.argmax(1)).all()
    assert (expected - got).abs().max() < 0.05 * expected.abs().max() + 1e-3


def test_skipped_layers_stay_float_and_are_reported_with_the_reason():
    model = small_cnn()
    quantized = pt2e.quantize_static(model, [images(16)], skip=["fc"])
    layers = pt2e.layer_coverage(quantized, skip=["fc"])
    assert layers["fc"] == {"runs": "float", "why": "kept float by quant.skip",
                            "fallback": "float32 linear"}
    assert coverage_summary(layers)["float_layers"] == 1
    with pytest.raises(pt2e.QuantizationError, match="quant.skip names 'classifier'"):
        pt2e.quantize_static(model, [images(16)], skip=["classifier"])


def test_a_model_that_cannot_be_captured_gets_a_one_line_error():
    class DataDependent(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(4, 2)

        def forward(self, x):
            return self.linear(x) if x.sum() > 0 else -self.linear(x)

    with pytest.raises(pt2e.QuantizationError, match="cannot capture DataDependent") as error:
        pt2e.quantize_static(DataDependent(), [torch.randn(4, 4)])
    assert "\n" not in str(error.value) and "quant=dynamic_int8" in str(error.value)


def test_qat_graph_trains_switches_modes_and_converts_to_int8():
    model = small_cnn()
    inputs, labels = images(32), torch.arange(32) % 10
    prepared = pt2e.prepare_qat(model, inputs[:2])
    prepared.train()
    optimizer = torch.optim.SGD(prepared.parameters(), lr=0.05, momentum=0.9)
    losses = []
    for _ in range(8):
        loss = nn.functional.cross_entropy(prepared(inputs), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss))
    assert losses[-1] < 0.7 * losses[0]  # the fake-quantized graph learns
    prepared.eval()
    quantized = pt2e.convert(prepared)
    assert all(layer["runs"] == "int8" for layer in pt2e.layer_coverage(quantized).values())
    with torch.no_grad():
        int8, simulated = quantized(inputs), prepared(inputs)
    # The int8 kernels compute what the fake-quantized graph simulated, up to rounding: a
    # broken conversion (wrong scales, a float layer left) moves logits by their own size.
    assert (int8 - simulated).abs().max() <= 0.5 * simulated.std()
    # Random labels after 8 steps leave close calls: top-1 flips only where two logits are
    # within that rounding (4 of 32 on 2026-12-06's machine, margins 0.003-0.026).
    assert (int8.argmax(1) == simulated.argmax(1)).float().mean() >= 0.8


@pytest.fixture(scope="module")
def bert():
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64, num_labels=2)
    return BertForSequenceClassification(config).eval()


def tokens(count: int = 4, length: int = 12) -> dict[str, torch.Tensor]:
    ids = torch.randint(1, 100, (count, length), generator=torch.Generator().manual_seed(2))
    mask = torch.ones_like(ids)
    mask[0, length - 4:] = 0  # padding in the batch
    return {"input_ids": ids, "attention_mask": mask}


def test_dynamic_int8_quantizes_linear_layers_only_and_says_so(bert):
    quantized = dynamic.quantize_dynamic_linear(bert)
    layers = dynamic.layer_coverage(bert, quantized)
    linear = [n for n, m in bert.named_modules() if isinstance(m, nn.Linear)]
    assert sorted(n for n, layer in layers.items() if layer["runs"] == "int8") == sorted(linear)
    embeddings = [n for n, m in bert.named_modules() if isinstance(m, nn.Embedding)]
    assert sorted(coverage_summary(layers)["fallback"]) == sorted(embeddings)
    assert state_bytes(quantized) < state_bytes(bert)
    with torch.no_grad():
        reference, int8 = bert(**tokens()).logits, quantized(**tokens()).logits
    assert (int8 - reference).abs().max() < 0.05


def test_dynamic_int8_export_reloads_to_the_same_predictions(bert, tmp_path):
    quantized = dynamic.quantize_dynamic_linear(bert, skip=["classifier"])
    assert isinstance(quantized.classifier, nn.Linear)  # skipped: still a float Linear
    path = export_quantized(quantized, tokens(2), tmp_path / "model_int8")
    assert path.suffix == ".pt"
    reloaded = load_quantized(path)
    with torch.no_grad():  # other batch sizes and sequence lengths than the traced ones
        for count, length in ((4, 12), (3, 20), (1, 6)):
            batch = tokens(count, length)
            assert torch.equal(reloaded(*positional(batch)), quantized(**batch).logits)


# -- the quant step of a run ------------------------------------------------------------------
FAST = ["trainer.max_epochs=1", "logger=none", "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false", "data.train_subset=600"]


def quant_run(compose_cfg, tmp_path, *overrides):
    cfg = compose_cfg(*FAST, f"paths.cache_dir={tmp_path / 'cache'}", *overrides)
    run_dir = tmp_path / "run"
    return run_stage(cfg, run_dir=run_dir), run_dir


def check_record(record, run_dir, method):
    metrics, quant = record["metrics"], record["quant"]
    assert record["name"].endswith(f"-{method}") and quant["method"] == method
    assert 0 <= metrics["test_int8/acc"] <= 1
    assert metrics["quant/size_bytes"] < metrics["quant_float/size_bytes"]
    for side in ("float", "int8"):
        assert {key for key in quant[side] if key.startswith("latency")} == {
            "latency_ms_b1", f"latency_ms_b{record['config']['quant']['latency_batch']}"}
        assert all(value > 0 for key, value in quant[side].items() if key.startswith("lat"))
    assert metrics["quant/speedup_b1"] == pytest.approx(
        quant["float"]["latency_ms_b1"] / quant["int8"]["latency_ms_b1"], rel=1e-3)
    exported = run_dir / f"model_int8{'.pt' if method == 'dynamic_int8' else '.pt2'}"
    assert quant["exported"] == str(exported)
    assert json.loads((run_dir / "summary.json").read_text())["quant"]["method"] == method
    return load_quantized(exported)


def test_static_int8_run_tests_measures_and_exports_the_int8_model(compose_cfg, tmp_path):
    from lepton_exp.data import build_datamodule
    from lepton_exp.training.classify import ClassificationModule
    from lepton_exp.training.trainer import evaluate

    record, run_dir = quant_run(compose_cfg, tmp_path, "quant=static_int8",
                                "quant.latency_batch=8")
    reloaded = check_record(record, run_dir, "static_int8")
    assert record["quant"]["fallback"] == {} and record["metrics"]["quant/float_layers"] == 0
    # the exported file, tested again without lepton-exp's quantization code, scores what
    # the run recorded
    cfg = compose_cfg(*FAST)
    datamodule = build_datamodule(cfg.data)
    datamodule.setup()
    reloaded_metrics = evaluate(ClassificationModule(reloaded, datamodule.info, cfg.optim,
                                                     cfg.scheduler), datamodule, "again",
                                cfg.trainer)
    assert reloaded_metrics["again/acc"] == pytest.approx(record["metrics"]["test_int8/acc"])


@pytest.mark.slow  # QAT itself: test_qat_graph_trains_switches_modes_and_converts_to_int8
def test_qat_run_finetunes_with_kd_from_the_float_teacher(compose_cfg, tmp_path):
    record, run_dir = quant_run(compose_cfg, tmp_path, "distill=kd", "quant=qat",
                                "quant.epochs=1", "teacher.model.name=resnet14",
                                "quant.latency_batch=8")
    check_record(record, run_dir, "qat")
    assert (run_dir / "qat" / "checkpoints").is_dir()  # apart from the float training's
    assert record["quant"]["int8"]["size_bytes"] < record["quant"]["float"]["size_bytes"]


@pytest.mark.slow  # dynamic int8 itself: test_dynamic_int8_* above
def test_dynamic_int8_run_on_a_text_student(compose_cfg, tmp_path):
    record, run_dir = quant_run(compose_cfg, tmp_path, "data=synthetic_text",
                                "model=bert_tiny", "quant=dynamic_int8",
                                "quant.latency_batch=4")
    check_record(record, run_dir, "dynamic_int8")
    assert all("Embedding" in layer["why"] for layer in record["quant"]["fallback"].values())


@pytest.mark.parametrize("overrides, message", [
    (["data=synthetic_text", "model=bert_tiny", "quant=static_int8"],
     "quant=static_int8 is for CNNs"),
    (["distill=fitnet", "quant=qat"], "quant=qat distils logits only"),
    (["quant=int8"], "quant"),
    (["quant=static_int8", "quant.calibration_batches=0"], "quant.calibration_batches=0"),
])
def test_bad_quant_settings_fail_before_training(compose_cfg, overrides, message):
    from hydra.errors import ConfigCompositionException

    from lepton_exp.config.validate import validate

    with pytest.raises((ConfigError, ConfigCompositionException), match=message):
        validate(compose_cfg(*overrides))


def test_pipeline_table_puts_each_int8_model_under_its_float_one():
    from rich.console import Console

    from lepton_exp.tracking.report import pipeline_table

    quant = {"method": "static_int8", "exported": "kd/model_int8.pt2",
             "float": {"size_bytes": 313_776, "latency_ms_b1": 2.0, "latency_ms_b64": 9.0},
             "int8": {"size_bytes": 82_608, "latency_ms_b1": 3.0, "latency_ms_b64": 6.0}}
    record = {"name": "quickstart", "status": "completed", "steps": {
        "student": {"model": "resnet8", "distill_terms": [], "metrics": {"test/acc": 0.9},
                    "num_params": 77_754, "model_size_bytes": 313_776},
        "kd": {"model": "resnet8", "distill_terms": ["kd"], "num_params": 77_754,
               "model_size_bytes": 313_776, "quant": quant,
               "metrics": {"test/acc": 0.95, "test_int8/acc": 0.94}}}}
    console = Console(width=200, record=True)
    console.print(pipeline_table(record))
    lines = [line.split() for line in console.export_text().splitlines()
             if len(line.split()) > 2]
    rows = {" ".join(line[:2]) if line[1] == "int8" else line[0]: line for line in lines}
    assert rows["kd"][-3:] == ["306.4", "2.00", "9.00"] and "float32" in rows["kd"]
    assert rows["kd int8"][-3:] == ["80.7", "3.00", "6.00"]
    assert "static_int8" in rows["kd int8"] and "0.9400" in rows["kd int8"]
    assert rows["student"][-2:] == ["-", "-"] and "student int8" not in rows  # not quantized
