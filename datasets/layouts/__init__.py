"""Dataset layouts: the generic folder layout, the published layouts, and the kit they are built from.

The catalogue (:mod:`datasets.catalog`) names each layout's loader."""
