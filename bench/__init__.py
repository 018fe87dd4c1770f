"""diffuserve benchmarks, one command family: `diffuserve bench <kind>` (bench/cli.py lists the kinds).

One percentile definition (`stats.percentile`) and one place for prompt sets and workloads
(`prompts`) serve every kind.
"""
