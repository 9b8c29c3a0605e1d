"""What a method is: a wiring of the model, and nothing else (no costs).

Each method file (vanilla.py, threaded.py, ...) builds one ``MethodSpec``: which kernel, where
each NIC's interrupt goes, each thread's policy / priority / CPUs, whether the partitioned
softirq is on, and which I/O path the RT VM and the heavy VMs use. Priorities follow the
testbed's table (DESIGN.md section 3): RT NIC IRQ thread FIFO 50, RT vNIC (vhost) FIFO 48,
RT vCPU FIFO 47, everything non-RT normal (CFS).
"""

from __future__ import annotations

from dataclasses import dataclass

from rtvm.kernel import SCHED_FIFO, SCHED_OTHER


@dataclass(frozen=True)
class Sched:
    """A thread's policy, priority and allowed CPUs (None: all CPUs)."""

    policy: str = SCHED_OTHER
    prio: int = 0
    cpus: tuple[int, ...] | None = None

    @property
    def allowed(self) -> set[int] | None:
        return set(self.cpus) if self.cpus is not None else None


NORMAL = Sched()
# the testbed's table (DESIGN.md section 3)
RT_IRQ_FIFO_50 = Sched(SCHED_FIFO, 50)
RT_VHOST_FIFO_48 = Sched(SCHED_FIFO, 48)
RT_VCPU_FIFO_47 = Sched(SCHED_FIFO, 47)


def fifo(prio: int, cpus: tuple[int, ...] | None = None) -> Sched:
    return Sched(SCHED_FIFO, prio, cpus)


def normal(cpus: tuple[int, ...] | None = None) -> Sched:
    return Sched(SCHED_OTHER, 0, cpus)


@dataclass(frozen=True)
class MethodSpec:
    name: str
    summary: str
    generation: str = "4.1-rt"
    # interrupt routing (MSI-X affinity of each NIC's queue)
    rt_nic_cpu: int = 0
    heavy_nic_cpus: tuple[int, ...] = (0, 1)
    # threads
    rt_irq: Sched = RT_IRQ_FIFO_50
    heavy_irq: Sched = NORMAL
    rt_vhost: Sched = RT_VHOST_FIFO_48
    heavy_vhost: Sched = NORMAL
    rt_vcpu: Sched = RT_VCPU_FIFO_47
    housekeeping_vcpu: Sched = NORMAL
    heavy_vcpu: Sched = NORMAL
    # mechanisms
    rt_poll_list: bool = False
    rtnet_prio: int = 47
    rt_io: str = "virtio"  # "virtio" | "outsourcing"
    rt_wake: str = "idle"  # outsourcing only: "idle" (extended idle loop) | "virq"
    heavy_io: str = "virtio"
