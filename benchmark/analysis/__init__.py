"""Numbers from predictions: metrics and bootstrap intervals (:mod:`.metrics`),
statistical tests (:mod:`.stats`) and figures (:mod:`.figures`). Imports nothing else
from :mod:`benchmark`."""
