#!/bin/busybox sh
# /init of the nestor appliance initramfs (busybox only).
#
# One script, several roles, chosen by $1:
#   (PID 1)    from the kernel: mount the API filesystems, then either switch_root to
#              nestor.root=/dev/vdX, or exec busybox init (which reads /etc/inittab).
#   sysinit    inittab ::sysinit: load modules, hostname, network, acpid, print the boot line.
#   run        inittab ::once: run /nestor/run.sh if a run.cpio supplied one (output on the
#              console).
#   console    inittab ::respawn: a shell on the console once Enter is pressed (askfirst
#              without its prompt, so nothing interleaves with run.sh's output).
#   shutdown   inittab ::shutdown: stop daemons, sync, unmount.
#   udhcpc     the udhcpc event script (called by /usr/share/udhcpc/default.script).
#
# Kernel command line (read from /proc/cmdline; dotted parameters never reach init's argv):
#   nestor.hostname=NAME  nestor.ip=ADDR/PREFIX  nestor.gw=GW  nestor.dns=IP  nestor.dhcp=1
#   nestor.root=/dev/vdX
#
# The boot line, kernel parameters and paths come from /etc/nestor/contract.sh (rendered from
# nestor/images/contract.py); the functions shared with the nested host's init from
# /etc/nestor/lib.sh (guest_lib.sh).

. /etc/nestor/contract.sh  # the host <-> guest contract (nestor/images/contract.py)
BOOT_LINE="$APPLIANCE_BOOT_LINE"
LOG_TAG=nestor-appliance
IP=ip
UDHCPC_SCRIPT=/usr/share/udhcpc/default.script
PATH=/usr/sbin:/usr/bin:/sbin:/bin
export PATH

. "$GUEST_LIB"  # log, read_cmdline, is_mounted, mount_once, wait_for, find_port, setup_net, udhcpc_event

mount_api() {
    mount_once proc /proc nosuid,nodev,noexec
    mount_once sysfs /sys nosuid,nodev,noexec
    mount_once devtmpfs /dev mode=0755,nosuid
}

switch_to_root() {
    dev="$1"
    modprobe virtio_mmio
    modprobe virtio_blk
    if ! wait_for "$dev" 100; then
        log "root device $dev did not appear"
        exec sh
    fi
    mkdir -p /newroot
    if ! mount -t ext4 -o rw "$dev" /newroot; then
        log "cannot mount $dev"
        exec sh
    fi
    for fs in /dev /proc /sys; do
        mkdir -p "/newroot$fs"
        mount --move "$fs" "/newroot$fs"
    done
    exec switch_root /newroot /sbin/init
}

stage_pid1() {
    mount_api
    read_cmdline
    if [ -n "$CMDLINE_root" ]; then
        switch_to_root "$CMDLINE_root"
    fi
    exec /sbin/init
}

load_modules() {
    # virtio_mmio first: on microvm it finds the virtio-mmio devices through ACPI.
    modprobe virtio_mmio
    for m in virtio_net virtio_blk virtio_console virtio_balloon virtio_rng \
             button evdev kvm; do
        modprobe "$m" 2>/dev/null
    done
    if grep -qw svm /proc/cpuinfo; then
        modprobe kvm_amd nested=1 2>/dev/null
    fi
    if grep -qw vmx /proc/cpuinfo; then
        modprobe kvm_intel nested=1 2>/dev/null
    fi
    for m in bridge tun veth macvlan nf_tables nf_nat nf_conntrack \
             nft_chain_nat nft_masq nft_nat nft_ct; do
        modprobe "$m" 2>/dev/null
    done
}

stage_sysinit() {
    mount_once devpts /dev/pts gid=5,mode=620
    mkdir -p /dev/shm /var/log
    is_mounted /dev/shm || mount -t tmpfs -o nosuid,nodev tmpfs /dev/shm
    is_mounted /run || mount -t tmpfs -o nosuid,nodev,mode=0755 tmpfs /run
    is_mounted /tmp || mount -t tmpfs -o nosuid,nodev tmpfs /tmp
    ln -sf /run /var/run
    read_cmdline
    hostname "${CMDLINE_hostname:-nestor}"
    load_modules
    # The ACPI power button (GED on microvm) -> evdev -> acpid -> /etc/acpi/PWRF/00000080.
    wait_for /dev/input/event0 20
    acpid -c /etc/acpi -l /run/acpid.log -p /run/acpid.pid
    setup_net
    echo "$BOOT_LINE" > /dev/console
}

stage_run() {
    if [ -f "$RUN_SCRIPT" ]; then
        log "running $RUN_SCRIPT"
        sh "$RUN_SCRIPT"
        log "run.sh exited with status $?"
    fi
}

stage_console() {
    if ! read -r _; then
        sleep 5  # no usable console input: do not let init respawn us in a tight loop
        exit 0
    fi
    exec /bin/cttyhack /bin/sh -l
}

stage_shutdown() {
    for pidfile in /run/udhcpc.eth0.pid /run/acpid.pid; do
        [ -f "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null
    done
    sync
    umount -a -r 2>/dev/null
    sync
}

# As PID 1 the kernel may pass stray command-line words as arguments: ignore them.
if [ "$$" = 1 ]; then
    stage_pid1
fi
case "$1" in
    sysinit) stage_sysinit ;;
    run) stage_run ;;
    console) stage_console ;;
    shutdown) stage_shutdown ;;
    udhcpc) shift; udhcpc_event "$@" ;;
    *) log "unknown stage: $1"; exit 2 ;;
esac
