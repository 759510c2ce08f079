"""Measuring spiking models: accuracy (``evaluation``), in-graph spike counts
(``instrument``), operation counts (``costs``), the report and its plots."""
