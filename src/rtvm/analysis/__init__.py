"""Analysis shared by the simulator and the real measurements: statistics."""
