"""Method 4: outsourcing (Garcia et al.) = PREEMPT_RT + the partitioned softirq (rt_poll_list,
rt_softirq_lock for IRQ threads at or above rtnet_prio 47) + RT socket outsourcing (VMRPC, one
copy, the extended idle loop instead of virtual interrupts). The heavy VMs outsource their
sockets too (conventional wake-up)."""

from rtvm.methods.base import MethodSpec

METHOD = MethodSpec(
    name="outsourcing",
    summary="PREEMPT_RT + rt_poll_list + RT socket outsourcing (extended idle loop)",
    rt_poll_list=True,
    rt_io="outsourcing",
    rt_wake="idle",
    heavy_io="outsourcing",
)
