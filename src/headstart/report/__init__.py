"""A run's ``report.html``: :mod:`.page` builds the page from the run folder's files,
:mod:`.plots` draws its figures with matplotlib, :mod:`.multilabel` holds the evaluation
sections of a multi-label model.

Importing the package imports none of them (matplotlib takes a second to load, and
most commands never draw): only the names of the page and its plot folder,
which belong to :mod:`headstart.runfolder`, are re-exported here.
"""

from ..runfolder import PLOTS_DIR, REPORT_FILE

__all__ = ["REPORT_FILE", "PLOTS_DIR"]
