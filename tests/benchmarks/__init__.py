"""Benchmarks of eightyeightpay against what users would use instead (not run by pytest).

Run everything with ``python -m tests.benchmarks.run [--quick] [--json FILE]``.
"""
