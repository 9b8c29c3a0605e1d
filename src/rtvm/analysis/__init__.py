"""Analysis shared by the simulator and the real measurements: statistics; and the
simulator's path stages (where a response time and its tail go)."""
