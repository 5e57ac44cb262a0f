"""Deployment exports (lepton_exp/export, training/deploy.py): each format's file agrees with
PyTorch in its runtime, the exported folder runs alone, bad input gets one line."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from torch import nn

from lepton_exp.data.base import DataInfo
from lepton_exp.export.runtime import (ExportError, RuntimeModel, compare, exportable,
                                       input_spec)
from lepton_exp.models import build_model

pytest.importorskip("onnxruntime")

CIFAR = DataInfo(num_classes=10, in_chans=3, image_size=32)
# the CNNs the presets train (conf/experiment, conf/sweep): students and teachers
PRESET_CNNS = ["resnet8", "resnet20", "resnet56", "resnet8x4", "resnet32x4", "wrn_16_2",
               "mobile_half", "shufflev2", "resnet18", "resnet34.tv_in1k"]


class _Images:
    """The few data-module answers the export step asks of a data set."""

    def __init__(self, info: DataInfo, batches: int = 3, size: int = 16, seed: int = 0):
        generator = torch.Generator().manual_seed(seed)
        self.info = info
        self.inputs = torch.randn(batches * size, info.in_chans, info.image_size,
                                  info.image_size, generator=generator)
        self.size = size

    def example_batch(self, size: int = 2, full_length: bool = False):
        return self.inputs[:size]

    def batches(self) -> list[torch.Tensor]:
        return list(self.inputs.split(self.size))


def _onnx(model: nn.Module, data, tmp_path, opset: int = 18):
    from types import SimpleNamespace

    from lepton_exp.export.formats import onnx

    example = data.example_batch(2)
    eager = exportable(model, example)
    path = tmp_path / "model.onnx"
    onnx.write(eager, example, path, SimpleNamespace(opset=opset), input_spec(data, 64))
    return eager, path, RuntimeModel(onnx.load(path, 2), "onnx")


def _model(name: str, info: DataInfo) -> nn.Module:
    from lepton_exp.config.compose import compose_config

    torch.manual_seed(0)
    # (the ImageNet teacher is a timm name under model=resnet18's node, not weights: offline)
    overrides = [f"model={name}"] if "." not in name else ["model=resnet18", f"model.name={name}"]
    return build_model(compose_config(overrides).model, info).eval()


@pytest.mark.parametrize("name", PRESET_CNNS)
def test_preset_cnns_export_to_onnx_and_agree_with_pytorch(name, tmp_path):
    data = _Images(CIFAR)
    eager, _, runtime = _onnx(_model(name, CIFAR), data, tmp_path)
    result = compare(eager, runtime, data.batches(), tolerance=1e-3, min_agreement=1.0,
                     what=name)
    assert result["top1_agreement"] == 1.0 and result["compared"] == 48
    assert result["max_abs_diff"] < 1e-3
    # a batch size the export was not traced with (dynamic batch)
    single = data.inputs[:1]
    with torch.no_grad():
        assert torch.allclose(runtime(single), eager(single), atol=1e-3)


def test_resnet8_exports_to_executorch_float_and_int8_on_the_threads_asked(tmp_path):
    pytest.importorskip("executorch")
    from types import SimpleNamespace

    from executorch.extension.pybindings import portable_lib

    from lepton_exp.export.formats import executorch

    data = _Images(CIFAR)
    example = data.example_batch(2)
    eager = exportable(_model("resnet8", CIFAR), example)
    spec = input_spec(data, 64)
    float_path, int8_path = tmp_path / "model.pte", tmp_path / "model_int8.pte"
    executorch.write(eager, example, float_path, SimpleNamespace(), spec)
    executorch.write_int8(eager, example, int8_path, SimpleNamespace(), spec, data.batches())
    for threads in (1, 2):  # the runtime's one pool, resized to the run's export.threads
        runtime = RuntimeModel(executorch.load(float_path, threads), "executorch")
        assert portable_lib._threadpool_get_thread_count() == threads
    result = compare(eager, runtime, data.batches(), tolerance=1e-3, min_agreement=1.0,
                     what="resnet8")
    assert result["top1_agreement"] == 1.0 and result["max_abs_diff"] < 1e-3
    with torch.no_grad():  # a batch size the program was not traced with (dynamic batch)
        assert torch.allclose(runtime(data.inputs[:1]), eager(data.inputs[:1]), atol=1e-3)
    int8 = RuntimeModel(executorch.load(int8_path, 1), "executorch int8")
    assert int8_path.stat().st_size < float_path.stat().st_size / 2
    # int8 of an untrained model on random inputs: close logits, most top-1s kept
    int8_result = compare(eager, int8, data.batches(), tolerance=None, min_agreement=0.5,
                          what="resnet8 int8")
    assert int8_result["max_abs_diff"] < 0.5 * float(eager(data.inputs).std())


def test_bert_student_exports_with_dynamic_batch_and_length(tmp_path):
    from transformers import BertConfig, BertForSequenceClassification

    from lepton_exp.export.formats import onnx

    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(
        vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, num_labels=2, attn_implementation="eager")).eval()
    ids = torch.randint(1, 100, (4, 12), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    mask[1, 8:] = 0  # padding must change nothing in the export either

    class Text:
        info = DataInfo(num_classes=2, vocab_size=100, max_length=16)

        def example_batch(self, size=2, full_length=False):
            length = 16 if full_length else 12
            return {"input_ids": torch.randint(1, 100, (size, length)),
                    "attention_mask": torch.ones(size, length, dtype=torch.long)}

    example = {"input_ids": ids[:2], "attention_mask": mask[:2]}
    eager = exportable(model, example)
    path = tmp_path / "bert.onnx"
    from types import SimpleNamespace
    onnx.write(eager, example, path, SimpleNamespace(opset=18), input_spec(Text(), 8))
    runtime = RuntimeModel(onnx.load(path, 2), "onnx")
    batches = [{"input_ids": ids, "attention_mask": mask},
               {"input_ids": ids[:1, :5], "attention_mask": mask[:1, :5]}]
    result = compare(model, runtime, batches, tolerance=1e-4, min_agreement=1.0, what="bert")
    assert result["compared"] == 5 and result["top1_agreement"] == 1.0


def test_a_diverging_export_names_its_first_diverging_output():
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 4)).eval()
    inputs = torch.randn(6, 3, 2, 2)

    def wrong(arguments):
        logits = model(*arguments).detach().clone()
        logits[3, 2] += 0.5  # sample 3, class 2
        return logits

    with pytest.raises(ExportError) as caught:
        compare(model, RuntimeModel(wrong, "x"), [inputs], tolerance=1e-3,
                min_agreement=0.0, what="export onnx (model.onnx)")
    message = str(caught.value)
    assert "output 2" in message and "sample 3" in message and "test batch 0" in message
    assert "\n" not in message
    # int8 (no tolerance): judged by top-1 agreement alone
    flipped = lambda arguments: -model(*arguments)  # noqa: E731
    with pytest.raises(ExportError, match="top-1 agrees"):
        compare(model, RuntimeModel(flipped, "x"), [inputs], tolerance=None,
                min_agreement=0.9, what="export onnx_int8")


def test_pruning_masks_are_folded_before_export(tmp_path):
    import onnx as onnx_lib
    from torch.nn.utils import prune

    model = _model("resnet8", CIFAR)
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            prune.l1_unstructured(module, "weight", amount=0.5)
    data = _Images(CIFAR)
    eager, path, runtime = _onnx(model, data, tmp_path)
    assert not any(hasattr(m, "weight_mask") for m in eager.modules())
    assert any(hasattr(m, "weight_mask") for m in model.modules())  # the run's model kept
    names = [init.name for init in onnx_lib.load(str(path)).graph.initializer]
    assert not any("mask" in name or "orig" in name for name in names)
    result = compare(model, runtime, data.batches(), tolerance=1e-3, min_agreement=1.0,
                     what="masked")
    assert result["top1_agreement"] == 1.0


def test_channel_pruned_model_exports_as_the_smaller_dense_model(tmp_path):
    import onnx as onnx_lib
    import torch_pruning as tp

    model = _model("resnet8", CIFAR)
    dense = sum(p.numel() for p in model.parameters())
    example = torch.randn(1, 3, 32, 32)
    pruner = tp.pruner.MagnitudePruner(model, example,
                                       importance=tp.importance.MagnitudeImportance(),
                                       pruning_ratio=0.5, ignored_layers=[model.fc])
    pruner.step()
    pruned = sum(p.numel() for p in model.parameters())
    assert pruned < 0.5 * dense
    _, path, runtime = _onnx(model, _Images(CIFAR), tmp_path)
    graph = onnx_lib.load(str(path)).graph
    stored = sum(int(np.prod(init.dims)) for init in graph.initializer)
    # the file holds the pruned weights (BN folded into convs by the exporter: fewer, not more)
    assert stored <= pruned


def test_digits_run_exports_runs_alone_and_records_its_predictions(tmp_path, compose_cfg):
    """A real run with export=onnx and quant=static_int8: the deploy folder holds float and
    int8 ONNX with inputs.json; a process that imports neither torch nor lepton_exp
    preprocesses raw images as inputs.json says and predicts as the record's model did."""
    from lepton_exp.app.run import run
    from lepton_exp.data import build_datamodule

    cfg = compose_cfg("stage=teacher", "trainer.max_epochs=1", "export=onnx",
                      "quant=static_int8", "logger=none", f"paths.output_dir={tmp_path}")
    record = run(cfg)
    deploy = record["deploy"]
    exports = deploy["exports"]
    assert list(exports) == ["eager", "onnx", "onnx_int8"]
    for key in ("onnx", "onnx_int8"):
        assert exports[key]["file_bytes"] > 0 and exports[key]["latency_ms_b1"] > 0
        assert record["metrics"][f"test_{key}/acc"] > 0.5
    assert exports["onnx"]["max_abs_diff"] < 1e-3
    assert abs(record["metrics"]["test_onnx/acc"] - record["metrics"]["test/acc"]) < 0.01
    assert exports["onnx_int8"]["file_bytes"] < exports["onnx"]["file_bytes"] / 2
    spec = json.loads(open(f"{deploy['dir']}/inputs.json").read())
    assert spec["value_range"] == [0, 1]
    datamodule = build_datamodule(cfg.data)
    datamodule.setup()
    assert spec["mean"] == list(datamodule.normalization()[0])
    # raw test images (uint8, as a user has them) and what the PyTorch model predicts
    raw = datamodule.test.images[:32]
    np.save(tmp_path / "raw.npy", raw.numpy())
    from lepton_exp.export.formats import onnx

    normalized = torch.stack([datamodule.dataset(datamodule.test, train=False)[i][0]
                              for i in range(32)])
    expected = RuntimeModel(onnx.load(f"{deploy['dir']}/model.onnx", 1), "onnx")(normalized)
    script = textwrap.dedent(f"""
        import sys
        sys.modules["torch"] = None  # importing torch or lepton_exp fails from here on
        sys.modules["lepton_exp"] = None
        import json, numpy as np, onnxruntime
        spec = json.load(open({f"{deploy['dir']}/inputs.json"!r}))
        images = np.load({str(tmp_path / 'raw.npy')!r})
        scale = 255.0 if images.dtype == np.uint8 else 1.0  # spec["value_range"]: [0, 1]
        images = images.astype(np.float32) / scale
        mean = np.array(spec["mean"], np.float32).reshape(1, -1, 1, 1)
        std = np.array(spec["std"], np.float32).reshape(1, -1, 1, 1)
        session = onnxruntime.InferenceSession({f"{deploy['dir']}/model.onnx"!r})
        logits = session.run(None, {{spec["inputs"][0]: (images - mean) / std}})[0]
        print(json.dumps([spec["class_names"][i] for i in logits.argmax(1)]))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          check=True)
    names = json.loads(done.stdout)
    assert names == [spec["class_names"][i] for i in expected.argmax(1).tolist()]
    # model.safetensors says the same in its metadata: the architecture reloaded from it
    # alone, fed the raw images prepared as the metadata says, predicts as the export does
    import timm
    from safetensors.torch import load_file

    from lepton_exp.models import read_metadata

    weights = f"{record['run_dir']}/model.safetensors"
    metadata = {key: json.loads(value) for key, value in read_metadata(weights).items()
                if key in spec}
    assert metadata == {key: value for key, value in spec.items() if key != "inputs"}
    model = timm.create_model(record["config"]["model"]["name"], in_chans=metadata["channels"],
                              num_classes=len(metadata["class_names"]))
    model.load_state_dict(load_file(weights))
    mean = torch.tensor(metadata["mean"]).reshape(1, -1, 1, 1)
    std = torch.tensor(metadata["std"]).reshape(1, -1, 1, 1)
    with torch.no_grad():
        scale = 255.0 if raw.dtype == torch.uint8 else 1.0  # metadata["value_range"]: [0, 1]
        logits = model.eval()((raw.float() / scale - mean) / std)
    assert logits.argmax(1).tolist() == expected.argmax(1).tolist()


@pytest.mark.parametrize("overrides, expected", [
    (["export=onxx"], "unknown option export=onxx (did you mean 'onnx'?)"),
    (["export=onnx", "export.formats.onnx.opsett=17"],
     "unknown option export.formats.onnx.opsett (did you mean 'opset'?)"),
    (["export=onnx", "export.formats.onnx.opset=9"], "writes opsets 18 to 23"),
    (["export=onnx", "export.tolerance=0"], "export.tolerance=0.0 is out of range"),
])
def test_bad_export_config_is_one_line_naming_the_fix(overrides, expected):
    from lepton_exp.config.preflight import PreflightError, preflight

    with pytest.raises(PreflightError) as caught:
        preflight(overrides)
    assert expected in str(caught.value)


def test_a_runtime_not_installed_names_the_extra_to_install(monkeypatch, compose_cfg):
    import importlib.util

    from lepton_exp.config.validate import validate
    from lepton_exp.errors import ConfigError

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "executorch" else real(name, *a))
    with pytest.raises(ConfigError, match=r"pip install 'lepton-exp\[deploy\]'"):
        validate(compose_cfg("export=executorch"))


def test_a_finished_run_is_exported_without_training_it_again(tmp_path, compose_cfg):
    """from_run: the model of a finished run, quantized and exported as a run of its own
    (stage compress), tested as it is: the same accuracy as the run's own model."""
    from lepton_exp.app.run import run
    from lepton_exp.config.validate import validate
    from lepton_exp.errors import ConfigError

    trained = run(compose_cfg("stage=teacher", "trainer.max_epochs=1", "logger=none",
                              f"paths.output_dir={tmp_path}"))
    cfg = compose_cfg(f"from_run={trained['run_dir']}", "export=onnx", "logger=none",
                      f"paths.output_dir={tmp_path}")
    assert cfg.stage == "compress"
    record = run(cfg)
    assert record["stage"] == "compress" and "epochs" not in record["metrics"]
    assert record["from_run"]["path"].endswith("model.safetensors")
    assert not (tmp_path / record["run_dir"] / "checkpoints").exists()
    weights_from = "test_best/acc" if "test_best/acc" in trained["metrics"] else "test/acc"
    assert record["metrics"]["test/acc"] == pytest.approx(trained["metrics"][weights_from])
    assert record["metrics"]["test_onnx/acc"] == pytest.approx(record["metrics"]["test/acc"],
                                                                abs=0.01)
    # the run's own settings, or one line saying which
    with pytest.raises(ConfigError, match="add data=digits model=resnet8"):
        run(compose_cfg(f"from_run={trained['run_dir']}", "export=onnx", "model=resnet20",
                        "logger=none", f"paths.output_dir={tmp_path}"))
    with pytest.raises(ConfigError, match="nothing to do without quant"):
        validate(compose_cfg(f"from_run={trained['run_dir']}"))


def test_runtime_latency_is_a_results_column_and_plot_axis(tmp_path, compose_cfg):
    from lepton_exp.app.run import run
    from lepton_exp.results.cli import main

    for seed in (0, 1):
        run(compose_cfg("stage=teacher", "trainer.max_epochs=1", "logger=none", "export=onnx",
                        f"seed={seed}", f"paths.output_dir={tmp_path / 'runs'}"))
    out = tmp_path / "table"
    main([str(tmp_path / "runs"), "--rows", "name", "--metric", "test_onnx/acc",
          "--metric", "deploy/onnx/latency_ms_b1", "--plot", "deploy/onnx/latency_ms_b1",
          "--out", str(out)])
    table = (tmp_path / "table.md").read_text()
    assert "| deploy/onnx/latency_ms_b1 |" in table.replace("test_onnx/acc | ", "")
    assert "(n=2)" in table
    assert (tmp_path / "table_test_onnx_acc_vs_deploy_onnx_latency_ms_b1.png").stat().st_size


def test_an_export_failure_is_one_line_and_keeps_the_runs_other_outputs(tmp_path, compose_cfg,
                                                                        monkeypatch):
    from pathlib import Path

    from lepton_exp.app.run import run
    from lepton_exp.export.runtime import ExportError

    def refuse(*args, **kwargs):
        raise RuntimeError("Unsupported operator aten::weird_op\n(page of details)")

    monkeypatch.setattr(torch.onnx, "export", refuse)
    with pytest.raises(ExportError) as caught:
        run(compose_cfg("stage=teacher", "trainer.max_epochs=1", "logger=none", "export=onnx",
                        f"paths.output_dir={tmp_path}"))
    message = str(caught.value)
    assert "\n" not in message and "aten::weird_op" in message and "opset" in message
    record_path, = Path(tmp_path).rglob("summary.json")
    record = json.loads(record_path.read_text())
    assert record["status"] == "failed"
    assert (record_path.parent / "model.safetensors").is_file()
    assert (record_path.parent / "checkpoints" / "last.ckpt").is_file()


def test_a_text_export_carries_its_tokenizer_and_runs_without_torch(tmp_path, compose_cfg):
    from lepton_exp.app.run import run
    from lepton_exp.data import build_datamodule
    from lepton_exp.models import build_model
    from safetensors.torch import load_file

    cfg = compose_cfg("data=synthetic_text", "model=bert_tiny", "stage=teacher",
                      "trainer.max_epochs=1", "logger=none", "export=onnx",
                      f"paths.output_dir={tmp_path}")
    record = run(cfg)
    deploy = record["deploy"]["dir"]
    spec = json.loads(open(f"{deploy}/inputs.json").read())
    assert spec["inputs"][:2] == ["input_ids", "attention_mask"] and spec["tokenizer"]
    sentences = ["a short one", "and a somewhat longer sentence than the first"]
    script = textwrap.dedent(f"""
        import sys
        sys.modules["torch"] = None
        sys.modules["lepton_exp"] = None
        import json, numpy as np, onnxruntime
        from tokenizers import Tokenizer
        spec = json.load(open({f"{deploy}/inputs.json"!r}))
        tokenizer = Tokenizer.from_file({deploy!r} + "/" + spec["tokenizer"] + "/tokenizer.json")
        tokenizer.enable_padding()
        encoded = tokenizer.encode_batch({sentences!r})
        feed = {{"input_ids": np.array([e.ids for e in encoded], np.int64),
                 "attention_mask": np.array([e.attention_mask for e in encoded], np.int64)}}
        session = onnxruntime.InferenceSession({f"{deploy}/model.onnx"!r})
        print(json.dumps(session.run(None, {{k: feed[k] for k in spec["inputs"]}})[0].tolist()))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          check=True)
    logits = torch.tensor(json.loads(done.stdout))
    datamodule = build_datamodule(cfg.data)
    datamodule.setup()
    model = build_model(cfg.model, datamodule.info)
    model.load_state_dict(load_file(f"{record['run_dir']}/model.safetensors"))
    batch = datamodule.tokenizer(sentences, padding=True, return_tensors="pt")
    with torch.no_grad():
        expected = model.eval()(input_ids=batch["input_ids"],
                                attention_mask=batch["attention_mask"]).logits
    assert torch.allclose(logits, expected, atol=1e-4)
