"""The application: one run of a config (``run``), which is a stage (``runner``) or a chain
of stages (``pipeline``)."""
