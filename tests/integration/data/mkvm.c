/* The smallest "hypervisor running inside": open /dev/kvm, create a VM with one vCPU, keep it.
 * On AMD, the guest kernel's KVM sets EFER.SVME while it has a live VM (docs: FACTS.md), which is
 * what nestor reads to apply the seed's rules R7 and R12-R14. Built static by the test (gcc). */
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdio.h>
#include <sys/ioctl.h>
#include <unistd.h>

int main(void) {
    int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (kvm < 0) { perror("mkvm: open /dev/kvm"); return 1; }
    int vm = ioctl(kvm, KVM_CREATE_VM, 0);
    if (vm < 0) { perror("mkvm: KVM_CREATE_VM"); return 1; }
    int vcpu = ioctl(vm, KVM_CREATE_VCPU, 0);
    if (vcpu < 0) { perror("mkvm: KVM_CREATE_VCPU"); return 1; }
    printf("mkvm: a VM is live\n");
    fflush(stdout);
    for (;;) pause();
}
