"""Real guests for ``rtvm measure vm-timer`` and ``vm-rr``.

- ``kernel``: Debian kernels (stock ``linux-image-amd64``, PREEMPT_RT ``linux-image-rt-amd64``)
  fetched with ``apt-get download`` into ``~/.cache/rtvm`` and unpacked (vmlinuz, virtio modules).
- ``initramfs``: busybox-static, the measuring tool with its libraries (found with ldd), the
  modules, and a small init that runs the measurement, prints machine-readable results on the
  serial console and powers off.
- ``qemu``: the qemu-system-x86_64 command line, the accelerator choice (KVM where it works, TCG
  with a clear warning where not), the boot with a watchdog that always ends the guest, the
  serial-console reader, and the host-side tuning of qemu's threads (found by their names).
"""
