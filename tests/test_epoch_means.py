"""The training epoch's means kept by the module: sample-weighted, summed as Lightning sums an
on_epoch mean, carried through a checkpoint, reduced over ranks before the division."""

from __future__ import annotations

import torch
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy

from lepton_exp.training.epoch_means import EpochMeans, load_metric_states, metric_states


def test_means_are_sample_weighted_and_summed_in_lightnings_order():
    means = EpochMeans()
    means.add({"loss": torch.tensor(2.0), "kd": torch.tensor(0.5)}, 6)
    means.add({"loss": torch.tensor(1.0), "kd": torch.tensor(1.5)}, 2)
    got = means.means()  # (values exact in binary)
    assert got["loss"].item() == (2.0 * 6 + 1.0 * 2) / 8
    assert got["kd"].item() == (0.5 * 6 + 1.5 * 2) / 8
    values = torch.rand(7)
    means.reset()
    expected = torch.tensor(0.0)
    for value in values:  # Lightning: value = value + x.mean() * batch_size, then / samples
        means.add({"loss": value}, 3)
        expected = expected + value.mean() * 3
    assert torch.equal(means.means()["loss"], expected / torch.tensor(21))


def test_a_checkpointed_epoch_continues_where_it_stopped():
    first, second = EpochMeans(), EpochMeans()
    first.add({"loss": torch.tensor(3.0)}, 5)
    second.load_state_dict(first.state_dict(), torch.device("cpu"))
    second.add({"loss": torch.tensor(1.0)}, 5)
    assert second.means()["loss"].item() == 2.0 and second.samples == 10


def test_reduce_sums_over_ranks_before_dividing():
    means = EpochMeans()
    means.add({"loss": torch.tensor(1.0)}, 2)  # this rank: mean 1.0 over 2 samples
    # another rank with 6 samples of mean 3.0: sums 2 + 18, samples 2 + 6
    other = {0: torch.tensor(18.0), 1: torch.tensor(6)}
    reduced = means.means(lambda t: t + (other[0] if t.is_floating_point() else other[1]))
    assert reduced["loss"].item() == 20.0 / 8


def test_metric_states_round_trip():
    def collection():
        return MetricCollection({"acc": MulticlassAccuracy(3, average="micro")})

    logits = torch.tensor([[3.0, 0, 0], [0, 3.0, 0], [0, 0, 3.0], [3.0, 0, 0]])
    labels = torch.tensor([0, 1, 0, 2])
    whole = collection()
    whole.update(logits, labels)
    split = collection()
    split.update(logits[:2], labels[:2])
    resumed = collection()
    load_metric_states(resumed, metric_states(split))
    resumed.update(logits[2:], labels[2:])
    assert resumed.compute()["acc"].item() == whole.compute()["acc"].item() == 0.5
    never = collection()  # never updated: nothing saved, still not updated once loaded
    assert metric_states(never) == {}
    load_metric_states(never, metric_states(never))
    assert not never["acc"].update_called


def test_top_one_accuracy_counts_correct_argmaxes_as_torchmetrics_micro_accuracy_does():
    from lepton_exp.training.classify import TopOneAccuracy

    accuracy = TopOneAccuracy()
    # argmaxes 0, 1, 2, 0 (a tie between classes 0 and 1 goes to the first, as torch's argmax)
    accuracy.update(torch.tensor([[3.0, 0, 0], [0, 3.0, 0], [0, 0, 3.0], [1.0, 1.0, 0]]),
                    torch.tensor([0, 1, 0, 1]))
    accuracy.update(torch.tensor([[0.0, 0, 2.0]]), torch.tensor([2]))
    assert (accuracy.correct.item(), accuracy.total.item()) == (3, 5)
    assert torch.equal(accuracy.compute(), torch.tensor(3.0) / 5)
    generator = torch.Generator().manual_seed(0)
    ours, theirs = TopOneAccuracy(), MulticlassAccuracy(10, top_k=1, average="micro")
    for _ in range(7):
        logits = torch.randn(33, 10, generator=generator).round()  # many ties
        labels = torch.randint(0, 10, (33,), generator=generator)
        ours.update(logits, labels)
        theirs.update(logits, labels)
    assert torch.equal(ours.compute(), theirs.compute())


def test_states_of_a_metric_that_counted_differently_are_not_loaded():
    from lepton_exp.training.classify import TopOneAccuracy

    old = MetricCollection({"acc": MulticlassAccuracy(3, average="micro")})
    old.update(torch.eye(3), torch.tensor([0, 1, 1]))
    new = MetricCollection({"acc": TopOneAccuracy()})
    assert not load_metric_states(new, metric_states(old))
    assert not new["acc"].update_called
