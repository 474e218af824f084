"""The report's sections, one module each, in the order :func:`benchmark.reporting.builder.build` writes them."""
