"""Method 3: exclusive CPU (the "dedicated processor" method). CPU 1 is reserved for the RT
group (RT IRQ thread, RT vhost, the RT VM's vCPUs: the RT one and its housekeeping one, as
pinning the RT VM to its processor places them) and takes only the RT NIC's interrupt;
everything non-RT runs on CPU 0."""

from rtvm.methods.base import MethodSpec, fifo, normal

RT_CPU, NON_RT_CPU = (1,), (0,)

METHOD = MethodSpec(
    name="exclusive",
    summary="PREEMPT_RT; one CPU reserved for the RT group, the other for everything else",
    rt_nic_cpu=1,
    heavy_nic_cpus=(0, 0),
    rt_irq=fifo(50, RT_CPU),
    rt_vhost=fifo(48, RT_CPU),
    rt_vcpu=fifo(47, RT_CPU),
    heavy_irq=normal(NON_RT_CPU),
    heavy_vhost=normal(NON_RT_CPU),
    housekeeping_vcpu=normal(RT_CPU),
    heavy_vcpu=normal(NON_RT_CPU),
)
