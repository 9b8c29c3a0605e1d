"""Published figures, shown beside the model's and labelled as published; never used as output.

Garcia, Shinjo, Pu, IEEE Access 6 (2018): critical RT server response time (us), 30 s runs, and
the heavy receivers' total throughput (DESIGN.md section 3, the calibration target).
"""

from typing import Any

SIMPLE_RT: list[dict[str, Any]] = [
    {"method": "vanilla", "mean_us": 92.5, "p99_us": 225.0, "sd_us": 29.2, "heavy_gbps": 18.8},
    {"method": "threaded", "mean_us": 100.8, "p99_us": 202.9, "sd_us": 29.0, "heavy_gbps": 17.8},
    {"method": "exclusive", "mean_us": 70.5, "p99_us": 96.0, "sd_us": 11.8, "heavy_gbps": 10.4},
    {"method": "outsourcing", "mean_us": 32.9, "p99_us": 46.8, "sd_us": 29.0 / 6,
     "heavy_gbps": 18.8},
]  # fmt: skip

#: outsourcing needs 32 % less CPU than threaded (published, in words)
CPU_SAVING_OUTSOURCING_VS_THREADED = 0.32
