"""vCPU threads: a host task that runs guest code (KVM_RUN), with VM exits and entries, HLT with
optional halt polling, and interrupt injection (virt/kvm/kvm_main.c; kernel-facts.md section 5).

The vCPU task's code is the KVM_RUN loop: enter the guest; run guest interrupt handlers, guest
softirqs and guest threads (the guest kernel's choices, guest.py) in chunks of CPU time; when
the guest has nothing to do it executes HLT: VM exit, optional halt polling (busy, only while
this is the only runnable task on the CPU, ended early by an interrupt), then the task blocks
(kvm_vcpu_block) until an interrupt is injected, and enters again.

Injection (kvm_vcpu_kick): a halted vCPU is woken (kvm_vcpu_wake_up); a polling one stops
polling; one executing guest code is kicked out: smp_send_reschedule, the host's one reschedule
IPI path (Kernel.smp_send_reschedule), lands on its CPU ``ipi_cross_cpu`` later as a host
interrupt, and a host interrupt in guest mode exits the guest (external-interrupt exiting): it
pays the exit and the entry back before its handler runs (Task.guest_exit, Cpu._enter_irq).
Any such exit lets KVM deliver what is pending before it enters again: a guest thread's chunk
ends there (Cpu.cut_short) and the interrupt is injected on the entry. Guest interrupt and
softirq code is not cut (the guest runs it with interrupts off or in a bottom half): the
injection waits for its end. A vCPU already out of guest mode (an interrupt on its CPU, or
preempted) needs no IPI: it injects when it next enters. While a kick's IPI is in flight a
second kick sends none (vcpu->mode is already EXITING_GUEST_MODE).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from rtvm.kernel.task import BLOCK, RUNNING, SLEEPING, Code, Task

if TYPE_CHECKING:
    from rtvm.virt.guest import GuestThread
    from rtvm.virt.vm import Vm

#: a guest interrupt handler: guest kernel code run on the vCPU when the vector is delivered
GuestIrq = Callable[["Vcpu"], Code]


class HaltPolling:
    """KVM's adaptive halt polling (4.3 and later): per-vCPU halt_poll_ns within a global
    ceiling, grown from grow_start on a short block the poll missed, shrunk on a long one.
    The testbed's 4.1 has halt_poll_ns = 0 (the profile's value), and set, it polled the full
    module value on every halt with no per-vCPU adaptation; the halt-polling what-if runs
    the later kernels' logic."""

    def __init__(
        self, max_ns: int = 0, grow: int = 2, grow_start_ns: int = 10_000, shrink: int = 0
    ) -> None:
        self.max_ns = max_ns
        self.grow = grow
        self.grow_start_ns = grow_start_ns
        self.shrink = shrink
        self.poll_ns = 0

    def update(self, block_ns: int, polled_ok: bool) -> None:
        """Grow when a poll failed but the block was short; shrink when the block was long."""
        if self.max_ns <= 0:
            return
        if polled_ok:
            return
        if block_ns <= self.max_ns:
            grown = self.poll_ns * self.grow if self.poll_ns else self.grow_start_ns
            self.poll_ns = min(self.max_ns, grown)
        else:
            self.poll_ns = self.poll_ns // self.shrink if self.shrink else 0
            if self.poll_ns < self.grow_start_ns:
                self.poll_ns = 0


class Vcpu:
    def __init__(
        self,
        vm: Vm,
        index: int,
        policy: str,
        prio: int,
        allowed: set[int] | frozenset[int] | None,
        halt_poll: HaltPolling,
    ) -> None:
        self.vm = vm
        self.index = index
        self.kernel = vm.kernel
        self.name = f"{vm.name}/vcpu{index}"
        self.pending_irqs: deque[GuestIrq] = deque()
        self.halt_poll = halt_poll
        self.halted = False
        self.polling = False
        self.running_thread: GuestThread | None = None
        self.kick_in_flight = False  # a kick's IPI is on its way (EXITING_GUEST_MODE)
        self.kick_requested = False  # the next exit must end the guest run (a notify)
        #: LLC owner of KVM's exit and entry code, touched on every exit (kvm_stall), if any
        self.ws_owner: str | None = None
        # counters
        self.exits = 0
        self.halts = 0
        self.polls_ok = 0
        self.kicks = 0
        self.injections = 0
        self.merged_injections = 0  # MSIs merged into a vector still pending in the IRR
        self.task: Task = self.kernel.create_task(
            f"CPU {index}/KVM ({vm.name})", self._kvm_run, policy, prio, allowed
        )
        self.task.guest_exit = self._external_interrupt_exit
        self.task.sched_out = self._sched_out

    # -- injection --------------------------------------------------------------------------
    def inject(self, handler: GuestIrq, waker: Any = None) -> None:
        """kvm_set_irq -> kvm_vcpu_kick: deliver a guest interrupt. The vector's IRR bit
        (apic_set_irr) is set once: a second MSI before the first is delivered merges into it
        (only the kick is repeated); one that comes once the handler began is a new one."""
        if handler in self.pending_irqs:
            self.merged_injections += 1
        else:
            self.injections += 1
            self.pending_irqs.append(handler)
        self.notify(waker)

    def notify(self, waker: Any = None) -> None:
        """Make the vCPU look at its guest again: wake it, end its poll, or kick it out."""
        t = self.task
        cpu = t.cpu
        if cpu is not None and cpu.stepping is t:
            return  # the vCPU's own code made the work: its loop sees it next, no exit
        if t.state == SLEEPING:
            self.kernel.wake_up(t, waker=waker)
        elif self.polling:
            cpu.cut_short(t)
        elif self.in_guest and t.state == RUNNING:
            self.kick_requested = True
            if cpu.curr is t and not cpu.irq_stack and t.run_ev is not None:
                if not self.kick_in_flight:  # executing guest code: IPI it out
                    self.kicks += 1
                    self.kick_in_flight = True
                    self.kernel.smp_send_reschedule(cpu)
            else:  # out of guest mode already (covered by an interrupt, or preempted)
                self._end_guest_run()

    def _end_guest_run(self) -> None:
        """KVM delivers pending events before it enters again: a guest thread's chunk ends
        here (it resumes after the injection); guest kernel code runs to its end first."""
        self.kick_requested = False
        if self.running_thread is not None:
            self.task.cpu.cut_short(self.task)

    # -- the KVM_RUN loop -------------------------------------------------------------------
    def _kvm_run(self, t: Task) -> Code:
        c = self.kernel.costs
        guest = self.vm.guest
        yield c.vm_exit_entry // 2
        self._enter()
        while True:
            if self.pending_irqs:
                self.vm.on_entry(self)  # injected on a VM entry: the probe fires
                yield from self.pending_irqs.popleft()(self)
                continue
            work = guest.softirq_work(self)
            if work is not None:
                yield from work
                continue
            gt = guest.pick(self)
            if gt is not None:
                yield from self._run_thread(gt)
                continue
            idle = guest.idle_work(self)
            if idle is not None:
                yield from idle
                continue
            yield from self._halt()

    def _run_thread(self, gt: GuestThread) -> Code:
        from rtvm.virt.guest import GUEST_BLOCK

        req: Any  # a cost (int) or a blocking request from the thread's code
        if gt.leftover:
            req, gt.leftover = gt.leftover, 0
        else:
            try:
                resume = gt.resume
                req = next(gt.code) if resume is None else gt.code.send(resume)
            except StopIteration:
                gt.done = True
                return
            gt.resume = None
            if req is GUEST_BLOCK:
                if gt.wake_pending:  # the wakeup came first: do not sleep
                    gt.wake_pending = False
                else:
                    gt.blocked = True
                return
            if req.__class__ is not int:
                raise TypeError(f"guest thread {gt.name} yielded {req!r}")
            if req <= 0:
                return
        self.running_thread = gt
        left = yield req
        self.running_thread = None
        if left:  # exited mid-chunk (its exit paid by the interrupt): the rest runs later
            gt.leftover = left
            self.vm.on_entry(self)  # entered again, with what was pending

    def _halt(self) -> Code:
        """HLT: VM exit, optional halt polling, block until woken, VM entry."""
        c = self.kernel.costs
        self.halts += 1
        self._exit("hlt")
        yield c.vm_exit_entry // 2
        hp = self.halt_poll
        polled_ok = False
        t = self.task
        if hp.poll_ns and not self.pending_irqs and not len(t.cpu.rq):  # single_task_running
            self.polling = True
            left = yield hp.poll_ns
            self.polling = False
            polled_ok = bool(left) or bool(self.pending_irqs)
            if polled_ok:
                self.polls_ok += 1
        start = self.kernel.sim.now
        if not polled_ok and not self.has_guest_work():
            self.halted = True
            while not self.has_guest_work():
                yield BLOCK  # kvm_vcpu_block -> schedule()
            self.halted = False
        hp.update(self.kernel.sim.now - start, polled_ok)
        yield c.vm_exit_entry // 2 + self.kvm_stall()  # the entry after the wait: its lines
        self._enter()

    def has_guest_work(self) -> bool:
        return bool(self.pending_irqs) or self.vm.guest.has_work(self)

    # -- exits and entries (with the per-request probes) -----------------------------------
    def _external_interrupt_exit(self) -> int:
        """A host interrupt (a device's, a reschedule IPI) arrived in guest mode: VM exit,
        the host runs its handler, VM entry. Returns the exit and entry's CPU time; ends the
        guest run if KVM has something to deliver on the entry."""
        self.exits += 1
        self.vm.on_exit(self, "external_interrupt")
        self._sched_out()
        return self.kernel.costs.vm_exit_entry + self.kvm_stall()

    def kvm_stall(self) -> int:
        """The LLC stall of KVM's exit and entry code (vmx_vcpu_run, vcpu_enter_guest, the
        exit dispatch), which every exit runs, whatever its reason: the misses on the lines
        of ``ws_owner`` lost since any vCPU last ran it."""
        llc = self.vm.llc
        return llc.touch(self.ws_owner) if self.ws_owner is not None and llc else 0

    def _sched_out(self) -> None:
        """Out of guest mode without a KVM exit of its own: an external-interrupt exit, or
        kvm_sched_out (a preempt notifier) when the vCPU thread leaves its CPU (the model lets
        a task in guest mode be preempted without an interrupt frame: a local wakeup, a CFS
        slice end). A kick still in flight is moot (a later one needs a new IPI), and what is
        pending is delivered when it enters again."""
        self.kick_in_flight = False
        if self.in_guest and (self.pending_irqs or self.kick_requested):
            self._end_guest_run()

    @property
    def in_guest(self) -> bool:
        """In guest mode: for the host, user-mode code of the vCPU task (preemptible)."""
        return self.task.user_mode

    def trap(self, reason: str, handle: Callable[[], None]) -> Code:
        """A synchronous VM exit from guest code (an ioeventfd write, an ICR MSR write): the
        exit, KVM's handling of it (``handle``, run at the exit, from this vCPU's host CPU),
        then the entry; the exit and entry's CPU time is this vCPU thread's."""
        self._exit(reason)
        handle()
        yield self.kernel.costs.vm_exit_entry + self.kvm_stall()
        self._enter()

    def _exit(self, reason: str) -> None:
        self.task.user_mode = False  # host kernel code until the next entry
        self.kick_in_flight = False
        self.kick_requested = False  # KVM sees what is pending before it enters again
        self.exits += 1
        self.vm.on_exit(self, reason)

    def _enter(self) -> None:
        # vcpu_enter_guest() checks need_resched before entering: in guest mode the host may
        # preempt the vCPU at any instant (the IPI exits the guest), on every preemption model.
        self.task.user_mode = True
        self.vm.on_entry(self)

    def __repr__(self) -> str:
        return f"<Vcpu {self.name} in_guest={self.in_guest} halted={self.halted}>"
