"""Pruning as plain functions over modules: what to prune (targets.py), how (unstructured
masks with torch.nn.utils.prune, structured channels with torch-pruning, transformer heads
and FFN neurons), when (the cubic schedule of gradual pruning). Each prune method is an entry
of ``methods/`` that calls them; the prune stage (lepton_exp.training.prune) wires those."""
