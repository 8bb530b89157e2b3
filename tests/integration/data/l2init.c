/* /init of the tiny L2 that libvirt runs inside a nestor L1 (tests/integration/test_libvirt_l1.py).
 *
 * It prints the hypervisor it runs under (CPUID leaf 0x40000000: "KVMKVMKVM" when the L1's KVM
 * runs it, "TCGTCGTCGTCG" under QEMU's TCG), then, by the first word of the kernel command line
 * that reaches init:
 *   count  count once a second forever (a guest whose counter must go on across a live migration)
 *   kvm    load /mods/{irqbypass,kvm,kvm-amd}.ko (an archive appended to the initramfs) and run an
 *          L3 that spins (`jmp $`) under this L2's KVM: a hypervisor really runs inside the L2
 *   l3ctl  the same L3 in a child process, while init prints "nestor-l2: tick N (...)" every 2 s
 *          (a line printed once is lost on a pty nobody reads) and reads the console: the line
 *          "nestor-stop-l3" kills the L3 (its VM is gone); the ticks go on (the cluster test)
 *   (none) power off.
 * Built static by the test (gcc); the initramfs is this file plus /dev/console. */
#include <cpuid.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/reboot.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

static void __attribute__((noreturn)) fail(const char *what) {
    perror(what);
    for (;;) pause();
}

static int __attribute__((noreturn)) run_l3(void) {
    const char *mods[] = {"/mods/irqbypass.ko", "/mods/kvm.ko", "/mods/kvm-amd.ko"};
    for (unsigned i = 0; i < 3; i++) {
        int fd = open(mods[i], O_RDONLY | O_CLOEXEC);
        if (fd < 0 || syscall(SYS_finit_module, fd, "", 0) != 0) fail(mods[i]);
        close(fd);
    }
    mknod("/dev/kvm", S_IFCHR | 0600, makedev(10, 232));
    int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (kvm < 0) fail("nestor-l2: /dev/kvm");
    int vm = ioctl(kvm, KVM_CREATE_VM, 0);
    if (vm < 0) fail("nestor-l2: KVM_CREATE_VM");
    unsigned char *mem = mmap(NULL, 0x1000, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    mem[0] = 0xeb; mem[1] = 0xfe;  /* jmp $ */
    struct kvm_userspace_memory_region region = {.slot = 0, .guest_phys_addr = 0, .memory_size = 0x1000,
                                                 .userspace_addr = (unsigned long)mem};
    if (ioctl(vm, KVM_SET_USER_MEMORY_REGION, &region) < 0) fail("nestor-l2: KVM_SET_USER_MEMORY_REGION");
    int vcpu = ioctl(vm, KVM_CREATE_VCPU, 0);
    if (vcpu < 0) fail("nestor-l2: KVM_CREATE_VCPU");
    struct kvm_sregs sregs;
    ioctl(vcpu, KVM_GET_SREGS, &sregs);
    sregs.cs.base = 0; sregs.cs.selector = 0;
    ioctl(vcpu, KVM_SET_SREGS, &sregs);
    struct kvm_regs regs = {.rip = 0, .rflags = 2};
    ioctl(vcpu, KVM_SET_REGS, &regs);
    printf("nestor-l2: an L3 spins under this L2's KVM\n");
    for (;;) ioctl(vcpu, KVM_RUN, 0);
}

/* l3ctl: the L3 runs in a child (loaded modules, /dev/kvm, `jmp $` under KVM_RUN); init ticks
 * and obeys "nestor-stop-l3" on the console. */
static int __attribute__((noreturn)) run_l3_controlled(void) {
    struct termios tio;
    if (tcgetattr(0, &tio) == 0) {  /* no echo: the L1's pty would echo it back as input */
        tio.c_lflag &= ~(tcflag_t)(ECHO | ECHONL);
        tcsetattr(0, TCSANOW, &tio);
    }
    pid_t child = fork();
    if (child < 0) fail("nestor-l2: fork");
    if (child == 0) run_l3();
    const char *state = "L3 process alive";
    char line[128];
    size_t used = 0;
    int input = 0;  /* the console; -1 once it reads EOF (poll ignores a negative fd) */
    unsigned long tick = 0;
    for (;;) {
        struct pollfd in = {.fd = input, .events = POLLIN};
        char c;
        if (poll(&in, 1, 2000) == 0) {  /* 2 s without input: a tick */
            if (child > 0 && waitpid(child, NULL, WNOHANG) == child) {
                child = 0;
                state = "the L3 ended by itself";
            }
            printf("nestor-l2: tick %lu (%s)\n", ++tick, state);
        } else if (read(input, &c, 1) != 1) {
            input = -1;
        } else if (c != '\n' && c != '\r') {
            if (used < sizeof line - 1) line[used++] = c;
        } else {
            line[used] = '\0';
            used = 0;
            if (strstr(line, "nestor-stop-l3") && child > 0) {
                kill(child, SIGKILL);
                waitpid(child, NULL, 0);
                child = 0;
                state = "the L3 stopped";
                printf("nestor-l2: the L3 stopped\n");
            }
        }
    }
}

int main(int argc, char **argv) {
    unsigned int eax = 0, regs[3] = {0, 0, 0};
    char vendor[13];
    int counting = argc > 1 && strcmp(argv[1], "count") == 0;
    int nesting = argc > 1 && strcmp(argv[1], "kvm") == 0;
    int controlled = argc > 1 && strcmp(argv[1], "l3ctl") == 0;

    setvbuf(stdout, NULL, _IONBF, 0);
    __cpuid(0x40000000, eax, regs[0], regs[1], regs[2]);
    memcpy(vendor, regs, 12);
    vendor[12] = '\0';
    printf("nestor-l2: up, hypervisor '%s'\n", vendor);
    if (nesting) return run_l3();
    if (controlled) return run_l3_controlled();
    if (!counting) {
        printf("nestor-l2: powering off\n");
        sync();
        reboot(RB_POWER_OFF);
        return 1;
    }
    for (unsigned long n = 1;; n++) {
        struct timespec second = {1, 0};
        printf("nestor-l2: count %lu\n", n);
        nanosleep(&second, NULL);
    }
}
