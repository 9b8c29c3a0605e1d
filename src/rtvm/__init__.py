"""rtvm: model, measure and tune the real-time latency of VMs on a Linux KVM host."""

__version__ = "0.1.0"
