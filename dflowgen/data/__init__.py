"""Datasets: dflowgen shards and readers for the standard optical-flow benchmarks."""
