"""``rtvm measure``: real timer and request/response latency, on the host and in real guests.

Modules, one concept each: ``stats`` (percentiles, confidence intervals, the shared row fields),
``tools`` (finding and running the real tools, clear errors, child cleanup), ``cyclictest``,
``stress`` (stress-ng host load), ``sockperf``, ``iperf3``, ``probe`` (rtvm's UDP probe),
``netns`` (namespaces and veth links), ``sched`` (priorities and affinities), ``hostinfo``,
``results`` (files and tables), ``timer`` and ``rr`` (the host experiments), ``guest`` (kernels,
initramfs, qemu, the guest experiments) and ``cli``. See docs/measure.md.
"""
