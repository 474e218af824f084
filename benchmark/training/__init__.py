"""One run, from its config to its run file: the run (:mod:`.runner`), the cached
teacher (:mod:`.teacher`), what a training job is given (:mod:`.setup`), the training
loop (:mod:`.train`), images to tensors (:mod:`.inputs`), the run-file format
(:mod:`.runfile`) and the environment a run records (:mod:`.provenance`). Uses
:mod:`benchmark.settings`, :mod:`benchmark.models` and :mod:`benchmark.analysis`;
never the orchestration or reporting above it."""
