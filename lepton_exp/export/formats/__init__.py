"""Export formats by name (``export=<name>``): one module each, see lepton_exp.export."""
