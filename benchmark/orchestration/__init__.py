"""What a user asks for and how it is run: the command line (:mod:`.cli`), a grid of
runs with sharding and resumption (:mod:`.grid`) and launchers for local worker
processes and SLURM arrays (:mod:`.launch`). Top of the harness: it uses
:mod:`benchmark.training`; nothing below imports it."""
