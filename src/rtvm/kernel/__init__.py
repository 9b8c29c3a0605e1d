"""The host kernel model: CPUs, scheduler, interrupts, softirq/NAPI with their locks, NICs, LLC.

It offers mechanisms; it knows nothing of RT methods (those wire it: rtvm.methods).
"""

from rtvm.kernel.host import GENERATIONS, Kernel
from rtvm.kernel.napi import NapiStruct, NetTunables, napi_schedule
from rtvm.kernel.nic import Packet, RxQueue, TcpSender, Wire
from rtvm.kernel.rtmutex import RtMutex
from rtvm.kernel.sched import SchedTunables
from rtvm.kernel.task import BLOCK, SCHED_FIFO, SCHED_OTHER, Task

__all__ = [
    "BLOCK",
    "GENERATIONS",
    "SCHED_FIFO",
    "SCHED_OTHER",
    "Kernel",
    "NapiStruct",
    "NetTunables",
    "Packet",
    "RtMutex",
    "RxQueue",
    "SchedTunables",
    "Task",
    "TcpSender",
    "Wire",
    "napi_schedule",
]
