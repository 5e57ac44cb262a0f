"""CIFAR-100: CIFAR-10's loader, schema and checks with 100 classes and their statistics
(npz files, or torchvision's cifar-100-python layout)."""

from __future__ import annotations

from lepton_exp.data.sets import cifar10
from lepton_exp.data.sets.cifar10 import Schema, check  # noqa: F401 - this entry's own

MEAN = (0.5071, 0.4865, 0.4409)
STD = (0.2673, 0.2564, 0.2762)
# the fine labels, in the order of their ids
CLASS_NAMES = tuple("""
apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus butterfly
camel can castle caterpillar cattle chair chimpanzee clock cloud cockroach couch crab crocodile
cup dinosaur dolphin elephant flatfish forest fox girl hamster house kangaroo keyboard lamp
lawn_mower leopard lion lizard lobster man maple_tree motorcycle mountain mouse mushroom oak_tree
orange orchid otter palm_tree pear pickup_truck pine_tree plain plate poppy porcupine possum
rabbit raccoon ray road rocket rose sea seal shark shrew skunk skyscraper snail snake spider
squirrel streetcar sunflower sweet_pepper table tank telephone television tiger tractor train
trout tulip turtle wardrobe whale willow_tree wolf woman worm""".split())


def build(cfg):
    return cifar10.build(cfg, num_classes=100, mean=MEAN, std=STD, class_names=CLASS_NAMES)
