"""The prune methods, one module each (``prune=<module name>``; see ``lepton_exp.registry``).

An entry module defines ``Schema`` (its config node: ``PruneConfig`` plus its own fields),
optionally ``check(cfg)`` (its own checks, one line per problem), and how it prunes -- one or
both of:

- ``prune(model, layers, cfg, target, previous, example)``: one pruning step, from sparsity
  ``previous`` to ``target``, before a round of finetuning (``prune.rounds`` such steps, the
  target rising linearly to ``prune.sparsity``);
- ``callbacks(layers, cfg) -> (callbacks, best_eligible)``: pruning *while* finetuning
  (Lightning callbacks; ``best_eligible(trainer)`` says when a checkpoint may be the best).

``layers`` maps the names of the prunable layers (``prune.skip`` left out) to their modules;
``example`` is a one-sample input batch. Entries import torch & co. only inside functions:
composing a config imports every entry. Adding a prune method is its module here plus
``conf/prune/<name>.yaml`` (``defaults: [/<name>_prune_schema@_here_, _self_]``).
"""
