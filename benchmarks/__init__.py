"""barenet's benchmark suite: barenet and PyTorch side by side on the CPU.

`python -m benchmarks` from the repository root runs every case and prints a table; see
`python -m benchmarks --help`. PyTorch is optional (`pip install -e ".[bench]"`): without it
the suite times barenet alone and says so. Nothing here is imported by barenet itself.
"""
