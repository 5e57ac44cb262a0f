"""The quant methods, one module each (``quant=<module name>``; see ``lepton_exp.registry``).

An entry module defines ``Schema`` (its config node: ``QuantConfig`` plus its own fields),
optionally ``check(cfg)`` (its own checks, one line per problem), and for a method that
quantizes:

- ``quantize(model, quant, datamodule, finetune) -> (quantized, layers)``: the int8 model of
  the float ``model`` (a CPU copy in eval mode, free to change) with ``quant`` = cfg.quant,
  and which layers run int8 or stay float, and why (``{name: {"runs": "int8" | "float",
  "why": ..., "fallback": ...}}``, "fallback" for float layers). A method that trains calls
  ``finetune(model, lr=, epochs=, distill=, directory=)``: the training layer's finetuning
  (the stage's optimiser and logit distillation terms), so nothing here imports training code;
- ``lower(quantized, inputs)``: the model as it runs fast on this CPU for inputs of that
  shape (what latency is timed on).

The export (``lepton_exp.quant.export``) picks its format from the quantized model's type.
Entries import torch & co. only inside functions: composing a config imports every entry.
Adding a quant method is its module here plus ``conf/quant/<name>.yaml``
(``defaults: [/<name>_quant_schema@_here_, _self_]``).
"""
