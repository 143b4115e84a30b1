"""Tables and figures of finished runs and sweeps: ``python -m recpo.report PATH``.

``collect`` reads the jobs and groups them into settings (mean ± std over seeds),
``tables`` and ``figures`` draw what the data supports, ``build`` writes the report
folder, ``wandb_run`` logs it to W&B.
"""

from recpo.report.build import Report, build_report
from recpo.report.collect import FACTORS, ReportError, collect

__all__ = ["FACTORS", "Report", "ReportError", "build_report", "collect"]
