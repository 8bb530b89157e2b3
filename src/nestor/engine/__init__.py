"""QEMU: argv builders (pure), process supervision, typed QMP and guest-agent facades."""
