"""DistilBERT/TinyBERT-style SST-2 distillation with lepton-exp, beside published numbers.

The pipeline of conf/experiment/sst2_distill*.yaml: a pretrained 6-layer MiniLM teacher
finetuned on SST-2, a 4-layer `bert_mini` student trained alone, and the same student
distilled with KD + last-layer attention KL + hidden-state MSE (MiniLM/TinyBERT-style task
distillation). Published: BERT-base and DistilBERT on GLUE dev (Sanh et al. 2019, Table 1),
BERT-base and TinyBERT-4 on GLUE test (Jiao et al. 2020, Table 1).

    python sweeps/paper/sst2.py --scale paper --data-root <dir with train/dev/test.tsv>  # GPU
    python sweeps/paper/sst2.py --scale cpu      # here: ~10 min

``--scale cpu`` (experiment=sst2_distill): 4000 training sentences, max length 48, teacher
1 epoch, students 3 epochs, one seed. ``--scale paper`` (experiment=sst2_distill_gpu): the
full 67k sentences, max length 128, teacher 3 epochs, students 10 epochs, 3 seeds. Both test
on GLUE's dev set (872 sentences). Our students are smaller and trained from scratch (no
general distillation or pre-training), so they sit below the published distilled models.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from lepton_exp.results import build_table, collect_records  # noqa: E402
from lepton_exp.results.report import write_markdown  # noqa: E402
from lepton_exp.results.sweep import run_sweep_command  # noqa: E402
from lepton_exp.results.table import Cell, format_cell  # noqa: E402

SCALES = {
    "paper": {"experiment": "sst2_distill_gpu", "seeds": "0,1,2",
              "about": "full SST-2 training set, max length 128, teacher 3 epochs, students "
                       "10 epochs, 3 seeds"},
    "cpu": {"experiment": "sst2_distill", "seeds": "0",
            "about": "4000 training sentences, max length 48, teacher 1 epoch, students 3 "
                     "epochs, 1 seed, 2 CPU cores"},
}
STEPS = [("teacher", "teacher: MiniLM-L6 (pretrained), finetuned"),
         ("student", "student alone: bert_mini (4 layers, 256 hidden), from scratch"),
         ("distilled", "distilled: bert_mini, KD + attention KL + hidden MSE")]
# Accuracy (%) on SST-2 as published, with the split it was measured on.
PUBLISHED = {
    "teacher": "BERT-base 92.7 (dev) [DistilBERT]; 93.4 (test) [TinyBERT]",
    "student": "—",
    "distilled": "DistilBERT-6L 91.3 (dev); TinyBERT-4L 92.6 (test)",
}
METRICS = ["test/acc", "test/f1", "test/mcc"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", choices=sorted(SCALES), default="cpu")
    parser.add_argument("--data-root", help="SST-2 directory (default: ../shared/data/sst2 "
                        "beside the repository)")
    parser.add_argument("--output-dir", type=Path, default=None,
                        help="where the sweep goes (default: $LEPTON_OUTPUT_DIR or outputs)")
    parser.add_argument("--out", type=Path, default=None,
                        help="table path without suffix (default: results/paper_sst2_<scale>)")
    parser.add_argument("--dry-run", action="store_true", help="print the command only")
    args = parser.parse_args()

    setting = SCALES[args.scale]
    data_root = args.data_root or str(REPO.parent / "shared" / "data" / "sst2")
    output_dir = (args.output_dir or Path(os.environ.get("LEPTON_OUTPUT_DIR", "outputs"))
                  ).resolve()
    sweep_dir = output_dir / "paper" / f"sst2_{args.scale}"
    command = ["lepton-exp", "-m", f"experiment={setting['experiment']}",
               f"data.root={data_root}", f"seed={setting['seeds']}",
               "trainer.enable_progress_bar=false", f"hydra.sweep.dir={sweep_dir}"]
    run_sweep_command(command, output_dir, args.dry_run)
    if args.dry_run:
        return

    runs = collect_records([sweep_dir])
    table = build_table(runs, ["step"], None, [*METRICS, "num_params"])
    made_by = shlex.join(["python", "sweeps/paper/sst2.py", *sys.argv[1:]])
    lines = [
        f"# SST-2 distillation, `{args.scale}` scale", "",
        f"Made by `{made_by}`; {setting['about']}; tested on GLUE's SST-2 dev set (872 "
        "sentences). Ours: mean ± std over seeds (n runs), accuracy in %. Published numbers "
        "are for larger, pre-trained students (DistilBERT: Sanh et al. 2019, Table 1; "
        "TinyBERT: Jiao et al. 2020, Table 1): they show where the recipe leads at scale, "
        "not a like-for-like comparison.", "",
        "| step | params | test acc (%) | macro F1 (%) | MCC | published (SST-2 acc %) |",
        "| --- | ---: | --- | --- | --- | --- |",
    ]
    for step, label in STEPS:
        cells = [table.cells.get((metric, (step,), None)) for metric in METRICS]
        params = table.cells.get(("num_params", (step,), None))
        shown = [_show(cell, scale) for cell, scale in zip(cells, (100, 100, 1), strict=True)]
        lines.append(f"| {label} | {'—' if params is None else f'{params.mean:,.0f}'} | "
                     f"{shown[0]} | {shown[1]} | {shown[2]} | {PUBLISHED[step]} |")
    out = args.out or REPO / "results" / f"paper_sst2_{args.scale}"
    print(f"wrote {write_markdown(lines, runs, out)}")


def _show(cell: Cell | None, scale: float) -> str:
    if cell is None:
        return "—"
    return format_cell(Cell([scale * value for value in cell.values]), 2 if scale > 1 else 4)


if __name__ == "__main__":
    main()
