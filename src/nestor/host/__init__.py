"""Read-only facts about the host: CPU, KVM kind, nesting parameters, QEMU."""
