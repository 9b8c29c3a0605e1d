"""Method 1: vanilla (non-RT) Linux 4.1. Interrupt-first: every NIC's hard IRQ and softirq run
at once, preempting any thread; all CPUs run all threads; RT threads are FIFO as in the table."""

from rtvm.methods.base import MethodSpec

METHOD = MethodSpec(
    name="vanilla",
    summary="non-RT kernel: hard IRQ + softirq of any NIC preempt every thread",
    generation="vanilla",
)
