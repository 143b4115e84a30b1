"""Tables and figures of finished runs and sweeps: ``python -m recpo.report PATH``.

Layers, each importing only those named before it: ``jobs`` finds the job folders and
reads their settings; ``labels`` names metrics and settings; ``methods`` reads each
objective's label, pairing and order from its class; ``entries`` holds each job's
results, ``collect`` groups them into conditions (mean ± std over seeds, ``stats``);
``references`` says what each result is compared with; ``table``, ``tables``,
``paired``, ``significance`` and ``figures`` draw what the data supports; ``build``
writes the report folder, ``wandb_run`` logs it to W&B.
"""

from recpo.errors import ReportError
from recpo.report.build import Report, build_report
from recpo.report.collect import collect
from recpo.report.jobs import FACTORS

__all__ = ["FACTORS", "Report", "ReportError", "build_report", "collect"]
