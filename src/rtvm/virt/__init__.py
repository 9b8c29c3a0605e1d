"""The virtualization model: vCPU threads, guest kernels, virtio rings, vhost, VMRPC.

Like the host model it offers mechanisms; RT methods wire them (rtvm.methods).
"""

from rtvm.virt.guest import GUEST_BLOCK, GuestKernel, GuestSocket, GuestThread, GuestVirtioNet
from rtvm.virt.vcpu import HaltPolling, Vcpu
from rtvm.virt.vhost import VhostNet, VhostWorker
from rtvm.virt.virtio import Virtqueue, vring_need_event
from rtvm.virt.vm import Vm
from rtvm.virt.vmrpc import OutsourcedSocket

__all__ = [
    "GUEST_BLOCK",
    "GuestKernel",
    "GuestSocket",
    "GuestThread",
    "GuestVirtioNet",
    "HaltPolling",
    "OutsourcedSocket",
    "Vcpu",
    "VhostNet",
    "VhostWorker",
    "Virtqueue",
    "Vm",
    "vring_need_event",
]
