"""torchdistill's KD on lepton-exp's data, models and schedule, run inside the throwaway venv
by benchmarks/peer_torchdistill.py: `python torchdistill_kd.py SPEC.json` prints one JSON line.

Training goes through torchdistill's own machinery, as its image-classification example does:
a DistillationBox from a train config (what their yaml files describe), its KDLoss, optimizer
and scheduler, and its pre_epoch/forward/post_forward/post_epoch processes. The models are
lepton-exp's CIFAR resnets (registered with timm on import); evaluation is plain torch.
"""

import json
import sys
import time
from pathlib import Path

import timm
import torch
import torch.nn.functional as F
import torchdistill
from safetensors.torch import load_file
from torch.utils.data import DataLoader, Dataset, RandomSampler
from torchdistill.core.distillation import get_distillation_box
from torchvision.transforms import v2

import lepton_exp.models.families.cifar_resnet  # noqa: F401 - registers resnet8, resnet20, ... with timm
from lepton_exp.distill.methods.kd import kd_loss


class Images(Dataset):
    """uint8 images normalised per sample, as lepton-exp's datamodule (and torchvision's
    datasets with ToTensor + Normalize, as torchdistill's configs use) do."""

    def __init__(self, images, labels, mean, std):
        self.images, self.labels = images, labels
        self.transform = v2.Compose([v2.ToDtype(torch.float32, scale=True),
                                     v2.Normalize(mean, std)])

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, index):
        return self.transform(self.images[index]), self.labels[index]


def main() -> None:
    spec = json.loads(Path(sys.argv[1]).read_text())
    torch.use_deterministic_algorithms(True)  # as lepton-exp's trainer.deterministic=true
    data = torch.load(spec["data"], weights_only=True)
    train, test = (Images(data[f"{split}_x"], data[f"{split}_y"], spec["mean"], spec["std"])
                   for split in ("train", "test"))
    check = torch.stack([train[i][0] for i in range(len(data["check"]))])
    assert torch.equal(check, data["check"]), "inputs differ from lepton-exp's datamodule"
    teacher = timm.create_model(spec["teacher"]["name"], **spec["teacher"]["kwargs"])
    teacher.load_state_dict(load_file(spec["teacher_weights"]))
    teacher.eval()  # torchdistill leaves the teacher's mode to the user; lepton-exp: eval
    torch.manual_seed(spec["seed"])  # student init and shuffling
    student = timm.create_model(spec["student"]["name"], **spec["student"]["kwargs"])
    steps = spec["epochs"] * (len(train) // spec["batch_size"])  # drop_last, as lepton-exp
    train_config = {
        "num_epochs": spec["epochs"],
        "train_data_loader": {
            "dataset_id": "train", "sampler": {"class_or_func": RandomSampler, "kwargs": {}},
            "kwargs": {"batch_size": spec["batch_size"], "num_workers": spec["num_workers"],
                       "drop_last": True}},
        # 1.1.5 has no default forward_proc any more (None is not registered): name it
        "teacher": {"requires_grad": False, "forward_proc": "forward_batch_only"},
        "student": {"requires_grad": True, "forward_proc": "forward_batch_only"},
        "optimizer": {"key": "SGD", "kwargs": dict(spec["sgd"])},
        # per-step cosine to eta_min: lepton-exp's LambdaLR cosine (no warm-up), same formula
        "scheduler": {"key": "CosineAnnealingLR", "scheduling_step": 1,
                      "kwargs": {"T_max": steps, "eta_min": spec["min_lr"]}},
        "criterion": {"key": "WeightedSumLoss", "kwargs": {"sub_terms": {"kd": {
            "weight": 1.0, "criterion": {"key": "KDLoss", "kwargs": {
                "student_module_path": ".", "student_module_io": "output",
                "teacher_module_path": ".", "teacher_module_io": "output",
                "temperature": spec["temperature"], "alpha": spec["alpha"],
                "reduction": "batchmean"}}}}}},
    }
    box = get_distillation_box(teacher, student, {"train": train}, train_config,
                               torch.device("cpu"), None, False, 1)
    seconds, samples = 0.0, 0
    for epoch in range(box.num_epochs):  # training epochs only: nothing else is timed
        started = time.perf_counter()
        box.pre_epoch_process(epoch=epoch)
        for images, targets, supp_dict in box.train_data_loader:
            loss = box.forward_process(images, targets, supp_dict)
            box.post_forward_process(loss=loss)
            samples += len(targets)
        box.post_epoch_process()
        seconds += time.perf_counter() - started
    last_lr = box.optimizer.param_groups[0]["lr"]
    # the same loss as lepton-exp's KD (alpha weights the cross-entropy), on random logits
    logits, labels = torch.randn(2, 64, 10), torch.randint(0, 10, (64,))
    theirs = box.criterion({"student": {".": {"output": logits[0]}},
                            "teacher": {".": {"output": logits[1]}}}, {}, labels)
    ours = spec["alpha"] * F.cross_entropy(logits[0], labels) + (1 - spec["alpha"]) * kd_loss(
        logits[0], logits[1], spec["temperature"])
    box.clean_modules()
    student.eval()
    correct = 0
    with torch.inference_mode():
        for images, labels in DataLoader(test, batch_size=spec["eval_batch_size"]):
            correct += int((student(images).argmax(1) == labels).sum())
    print(json.dumps({
        "test_acc": correct / len(test), "train_samples": samples, "train_s": round(seconds, 3),
        "train_samples_per_s": round(samples / seconds, 2), "epochs": box.num_epochs,
        "steps": steps, "last_lr": last_lr, "loss_difference": float(abs(theirs - ours)),
        "torchdistill": torchdistill.__version__, "torchdistill_file": torchdistill.__file__,
        "torch": torch.__version__, "torch_file": torch.__file__,
        "torch_threads": torch.get_num_threads()}))


if __name__ == "__main__":
    main()
