"""Method 2: threaded interrupt handling (PREEMPT_RT 4.1-rt). IRQ handlers run in threads (RT NIC
FIFO 50, others normal); one poll_list and one NET_RX lock per CPU are shared by all NICs."""

from rtvm.methods.base import MethodSpec

METHOD = MethodSpec(
    name="threaded",
    summary="PREEMPT_RT threaded IRQs; shared per-CPU poll_list and softirq lock",
)
