"""What decides a run's numbers: compute profiles (:mod:`.profiles`) and the run and
grid configurations with their hash (:mod:`.config`). A bottom layer of the harness:
it imports no other sub-package of :mod:`benchmark`."""
