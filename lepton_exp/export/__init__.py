"""Deployment exports: the run's final model written for the runtimes it will ship in, each
file loaded back into its runtime, compared with PyTorch and timed there.

One module per format in ``formats/`` (an entry of ``EXPORT_FORMATS``, chosen with
``export=<name>`` or ``export=[onnx,executorch]``), with the same interface:

- ``Schema``: the format's options (``export.formats.<name>``);
- ``check(cfg)``: problems with the config, one line each (its runtime not installed, ...);
- ``RUNTIME``: the runtime's name in tables; ``SUFFIX``: the file's;
- ``write(model, example, path, options, spec)``: the float model to ``path``;
- ``write_int8(model, example, path, options, spec, calibration)``: an int8 file (or
  ``Unsupported`` saying why not), calibrated on ``calibration`` batches;
- ``load(path, threads)``: a callable from the model's inputs (torch tensors) to logits.

The run step that calls them is lepton_exp/training/deploy.py; runtime.py holds what every
format shares (the comparison, the runtime model the metrics and timings take).
"""
