"""Pruning as plain functions over modules: what to prune, how (unstructured masks with
torch.nn.utils.prune, structured channels with torch-pruning), when (the cubic schedule of
gradual pruning) and what was really obtained (measure.py). The prune stage wires them."""
