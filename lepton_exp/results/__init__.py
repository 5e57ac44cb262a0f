"""Result tables and plots from run records (``lepton-exp-results``).

Modules, in the order data flows through them:

- ``collect``: run records from directories (summary.json, pipeline steps) -> :class:`Run`
- ``wandb_runs``: the same from a W&B project or W&B offline run logs
- ``sweep``: the jobs a Hydra sweep should have run; what is missing or did not finish
- ``table``: runs pivoted into ``mean ± std (n)`` cells; Markdown and CSV
- ``plots``: a metric against any key, PNG
- ``report``: the Markdown document; ``cli``: the command line
"""

from lepton_exp.results.collect import collect_records
from lepton_exp.results.run import ResultsError, Run
from lepton_exp.results.sweep import expected_jobs, find_problems, load_grid
from lepton_exp.results.table import build_table

__all__ = ["ResultsError", "Run", "build_table", "collect_records", "expected_jobs",
           "find_problems", "load_grid"]
