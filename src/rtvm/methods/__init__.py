"""The RT methods: each a short wiring of the model (see base.MethodSpec)."""

from rtvm.methods.base import MethodSpec, Sched, fifo, normal
from rtvm.methods.exclusive import METHOD as EXCLUSIVE
from rtvm.methods.outsourcing import METHOD as OUTSOURCING
from rtvm.methods.threaded import METHOD as THREADED
from rtvm.methods.vanilla import METHOD as VANILLA
from rtvm.methods.variants import RT_POLL_LIST_ONLY, SOCKET_ONLY, VIRQ

METHODS: dict[str, MethodSpec] = {
    m.name: m
    for m in (VANILLA, THREADED, EXCLUSIVE, OUTSOURCING, RT_POLL_LIST_ONLY, SOCKET_ONLY, VIRQ)
}
#: the four methods of the paper, in its order
PAPER_METHODS = ("vanilla", "threaded", "exclusive", "outsourcing")

__all__ = ["METHODS", "PAPER_METHODS", "MethodSpec", "Sched", "fifo", "normal"]
