"""Datasets: synthetic WLI/NBI twins, real folder layouts, lesion-level splits."""
