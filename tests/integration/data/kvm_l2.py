"""A small L2 run with Linux KVM's ioctls, for guests that have python3 but no QEMU.

Inside an L1 with /dev/kvm it makes a VM with 64 KiB of memory and one vCPU in real mode that
runs ``inc ax; out 0x10, al; jmp`` forever: L2 code running under L1's KVM, not just a VM
object. Every ``out`` exits to this process, which counts them and writes the count to the file
named by argv[1] (about twice a second) so a test can see the L2 running. It writes its PID to
argv[1] + '.pid' and runs until it is killed.
"""

import ctypes
import fcntl
import mmap
import os
import struct
import sys
import time

KVM_CREATE_VM = 0xAE01
KVM_GET_VCPU_MMAP_SIZE = 0xAE04
KVM_CREATE_VCPU = 0xAE41
KVM_SET_USER_MEMORY_REGION = 0x4020AE46  # _IOW(KVMIO, 0x46, struct kvm_userspace_memory_region), 32 bytes
KVM_RUN = 0xAE80
KVM_GET_SREGS = 0x8138AE83  # struct kvm_sregs, 312 bytes
KVM_SET_SREGS = 0x4138AE84
KVM_SET_REGS = 0x4090AE82  # struct kvm_regs, 144 bytes
KVM_EXIT_IO = 2
CODE_AT = 0x1000
CODE = bytes.fromhex("40" "e610" "ebfb")  # inc ax; out 0x10, al; jmp -5


def main() -> None:
    out = sys.argv[1]
    with open(out + ".pid", "w") as f:
        f.write(f"{os.getpid()}\n")
    kvm = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    vm = fcntl.ioctl(kvm, KVM_CREATE_VM, 0)
    memory = mmap.mmap(-1, 0x10000)
    memory[CODE_AT:CODE_AT + len(CODE)] = CODE
    address = ctypes.addressof(ctypes.c_char.from_buffer(memory))
    fcntl.ioctl(vm, KVM_SET_USER_MEMORY_REGION, struct.pack("IIQQQ", 0, 0, 0, 0x10000, address))
    vcpu = fcntl.ioctl(vm, KVM_CREATE_VCPU, 0)
    run = mmap.mmap(vcpu, fcntl.ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0), mmap.MAP_SHARED,
                    mmap.PROT_READ | mmap.PROT_WRITE)
    sregs = bytearray(312)
    fcntl.ioctl(vcpu, KVM_GET_SREGS, sregs)
    struct.pack_into("QIH", sregs, 0, 0, 0xFFFF, 0)  # cs: base 0, limit 64 KiB, selector 0
    fcntl.ioctl(vcpu, KVM_SET_SREGS, bytes(sregs))
    regs = bytearray(144)
    struct.pack_into("QQ", regs, 16 * 8, CODE_AT, 2)  # rip, rflags (bit 1 is always set)
    fcntl.ioctl(vcpu, KVM_SET_REGS, bytes(regs))
    exits, last = 0, 0.0
    while True:
        fcntl.ioctl(vcpu, KVM_RUN, 0)
        reason = struct.unpack_from("I", run, 8)[0]
        if reason != KVM_EXIT_IO:
            sys.exit(f"kvm_l2: unexpected exit reason {reason} after {exits} port writes")
        exits += 1
        now = time.monotonic()
        if now - last > 0.5:
            with open(out + ".tmp", "w") as f:
                f.write(f"{exits}\n")
            os.replace(out + ".tmp", out)
            last = now


if __name__ == "__main__":
    main()
