"""The ablation's variants of the outsourcing method (DESIGN.md section 5, experiment 2)."""

from dataclasses import replace

from rtvm.methods.outsourcing import METHOD as OUTSOURCING

RT_POLL_LIST_ONLY = replace(
    OUTSOURCING, name="outsourcing-rt-poll-list-only",
    summary="PREEMPT_RT + rt_poll_list only (virtio path, vhost)",
    rt_io="virtio", heavy_io="virtio",
)  # fmt: skip
SOCKET_ONLY = replace(
    OUTSOURCING, name="outsourcing-socket-only",
    summary="PREEMPT_RT + RT socket outsourcing only (shared poll_list)",
    rt_poll_list=False,
)  # fmt: skip
VIRQ = replace(
    OUTSOURCING, name="outsourcing-virq",
    summary="outsourcing with virtual interrupts instead of the extended idle loop",
    rt_wake="virq",
)  # fmt: skip
