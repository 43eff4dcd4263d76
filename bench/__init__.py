"""Benchmarks of order_engine: real server processes driven by a separate load generator.

`python -m bench` (or `make bench`) runs every scenario and prints one table; see
`bench/__main__.py` for the options and `bench/scenarios.py` for what each scenario does.
"""
