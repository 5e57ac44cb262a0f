"""int8 quantization of a trained model, as plain functions; each quant method is an entry of
``methods/`` that calls them (the run's quant step: lepton_exp/training/quantize.py).

- ``dynamic_int8`` (dynamic.py): Linear weights int8, activations quantized per batch.
- ``static_int8`` and ``qat`` (pt2e.py): PyTorch 2 export quantization with the x86
  quantizer; calibrated after training, or simulated while finetuning (QAT).
- coverage.py: which layers run int8; export.py: files that reload and run without
  lepton_exp.
"""
