"""Text: SST-2 teacher vs `bert_mini` alone vs `bert_mini` distilled — accuracy, parameters
and CPU latency.

    python -m benchmarks.sst2 --scale full     (whole suite: python -m benchmarks)

The runs are the `experiment=sst2_distill` pipeline as a user runs it; latency is timed
here afterwards, the models in turns, at batch 1 and 32 of full-length (48-token) inputs.
"""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.common import Options, Section, command_text, main_for, markdown_table, run_cli

SCALES = {"full": [], "smoke": ["data.train_subset=64", "data.val_subset=32",
                                "data.test_subset=64", "trainer.max_epochs=1"]}
STEPS = {"teacher": "teacher: MiniLM-L6 (pretrained), finetuned",
         "student": "bert_mini alone (from scratch)",
         "distilled": "bert_mini distilled (KD + attention KL + hidden MSE)"}


def latencies(options: Options, overrides: list[str], repeats: int) -> dict[str, dict]:
    """Median forward time (ms) of the teacher and the student architecture at batch 1 and
    32 (speed depends on shapes, not on weight values: the configs' models are timed)."""
    from lepton_exp.config.compose import compose_config
    from lepton_exp.data import build_datamodule
    from lepton_exp.measure import latencies_ms
    from lepton_exp.models import build_model
    from lepton_exp.models.taps import repeat_batch

    cfg = compose_config([*overrides, f"data.root={options.data_dir / 'sst2'}",
                          f"paths.output_dir={options.work_dir / 'outputs'}"])
    datamodule = build_datamodule(cfg.data)
    datamodule.setup()
    models = {"teacher": build_model(cfg.teacher.model, datamodule.info, "teacher.model"),
              "bert_mini": build_model(cfg.model, datamodule.info)}
    example = datamodule.example_batch(1, full_length=True)
    return {batch: dict(zip(models, latencies_ms(list(models.values()),
                                                 repeat_batch(example, batch),
                                                 repeats=repeats, warmup=2), strict=True))
            for batch in (1, 32)}


def run(options: Options) -> Section:
    overrides = ["experiment=sst2_distill", *SCALES[options.scale]]
    command = [*overrides, "logger=csv", f"hydra.run.dir={options.work_dir / 'sst2'}"]
    seconds = run_cli(command, options, "sst2")
    pipeline = json.loads((options.work_dir / "sst2" / "summary.json").read_text())
    # each step's own record (the teacher's run sits in the teacher cache)
    steps = {name: json.loads((Path(step["run_dir"]) / "summary.json").read_text())
             for name, step in pipeline["steps"].items() if step["status"] == "completed"}
    times = latencies(options, overrides, repeats=3 if options.smoke else 20)
    rows = []
    for step, label in STEPS.items():
        record = steps.get(step)
        if record is None:
            rows.append([label, "-", "-", "-", "-", "-", "-"])
            continue
        model = "teacher" if step == "teacher" else "bert_mini"
        metrics = record["metrics"]
        rows.append([label, f"{record['num_params']:,}", f"{metrics['test/acc'] * 100:.2f}",
                     f"{metrics.get('test/f1', float('nan')) * 100:.2f}",
                     f"{times[1][model]:.2f}", f"{times[32][model]:.1f}",
                     f"{record['timing']['train_samples_per_s']:.0f}"])
    speedup = times[32]["teacher"] / times[32]["bert_mini"]
    data = next(iter(steps.values()))["data"] if steps else {}
    body = (
        f"Setup (`conf/experiment/sst2_distill.yaml`): SST-2 from `{options.data_dir / 'sst2'}`, "
        f"{data.get('train', '?')} training sentences, {data.get('val', '?')} validation, tested "
        f"on GLUE's dev set ({data.get('test', '?')} sentences), max length 48, batch 32, "
        "AdamW + cosine with 10 % warm-up. Teacher: all-MiniLM-L6-v2 from the offline "
        "registry package with a new classification head, finetuned 1 epoch at lr 5e-5. "
        "Students: bert_mini (4 layers, hidden 256, random init), 3 epochs at lr 5e-4; "
        "distilled with `distill=minilm`, T = 2, alpha = 0.5. One seed. Latency: median "
        "forward time, models timed in turns in one process, full-length inputs.\n\n"
        + markdown_table(["model", "params", "test acc %", "test macro F1 %", "latency b1 (ms)",
                          "latency b32 (ms)", "train samples/s"], rows)
        + f"\n\nbert_mini vs teacher at batch 32: {speedup:.2f}x faster. Whole pipeline: "
        f"{seconds / 60:.1f} min wall.\n\nCommand (from the repo, `LEPTON_DATA_DIR` set):\n\n"
        f"```bash\n{command_text(command)}\n```")
    return Section("sst2", "Text: SST-2", body, [])


if __name__ == "__main__":
    main_for(run)
