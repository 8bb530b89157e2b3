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

BOOT_LINE="nestor-appliance: userspace up"
PATH=/usr/sbin:/usr/bin:/sbin:/bin
export PATH

log() {
    echo "nestor-appliance: $*"
}

# cmdline_get KEY -> value of nestor.KEY= from /proc/cmdline (empty if absent)
cmdline_get() {
    for arg in $(cat /proc/cmdline); do
        case "$arg" in
            "nestor.$1="*) echo "${arg#nestor.$1=}"; return 0 ;;
        esac
    done
    return 1
}

# is_mounted DIR (needs /proc)
is_mounted() {
    grep -q "^[^ ]* $1 " /proc/mounts 2>/dev/null
}

# mount_once TYPE DIR OPTIONS
mount_once() {
    mkdir -p "$2"
    is_mounted "$2" || mount -t "$1" -o "$3" "$1" "$2"
}

mount_api() {
    mount_once proc /proc nosuid,nodev,noexec
    mount_once sysfs /sys nosuid,nodev,noexec
    mount_once devtmpfs /dev mode=0755,nosuid
}

# wait_for PATH TENTHS: poll until PATH exists, at most TENTHS/10 seconds
wait_for() {
    n=0
    while [ ! -e "$1" ] && [ "$n" -lt "$2" ]; do
        usleep 100000
        n=$((n + 1))
    done
    [ -e "$1" ]
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
    root="$(cmdline_get root)"
    if [ -n "$root" ]; then
        switch_to_root "$root"
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

setup_net() {
    ip link set lo up
    if [ ! -e /sys/class/net/eth0 ]; then
        return 0
    fi
    addr="$(cmdline_get ip)"
    if [ -n "$addr" ]; then
        ip link set eth0 up
        ip addr add "$addr" dev eth0
        gw="$(cmdline_get gw)"
        [ -n "$gw" ] && ip route add default via "$gw" dev eth0
        dns="$(cmdline_get dns)"
        [ -n "$dns" ] && echo "nameserver $dns" > /etc/resolv.conf
    elif [ "$(cmdline_get dhcp)" = "1" ]; then
        # Stays in the background after the lease, to renew it.
        udhcpc -i eth0 -t 10 -T 1 -A 2 -n -S -p /run/udhcpc.eth0.pid \
            -s /usr/share/udhcpc/default.script || log "dhcp on eth0 failed"
    else
        ip link set eth0 up
    fi
}

stage_sysinit() {
    mount_once devpts /dev/pts gid=5,mode=620
    mkdir -p /dev/shm /var/log
    is_mounted /dev/shm || mount -t tmpfs -o nosuid,nodev tmpfs /dev/shm
    is_mounted /run || mount -t tmpfs -o nosuid,nodev,mode=0755 tmpfs /run
    is_mounted /tmp || mount -t tmpfs -o nosuid,nodev tmpfs /tmp
    ln -sf /run /var/run
    name="$(cmdline_get hostname)"
    hostname "${name:-nestor}"
    load_modules
    # The ACPI power button (GED on microvm) -> evdev -> acpid -> /etc/acpi/PWRF/00000080.
    wait_for /dev/input/event0 20
    acpid -c /etc/acpi -l /run/acpid.log -p /run/acpid.pid
    setup_net
    echo "$BOOT_LINE" > /dev/console
}

stage_run() {
    if [ -f /nestor/run.sh ]; then
        log "running /nestor/run.sh"
        sh /nestor/run.sh
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

# udhcpc calls its script with the event in $1 and the lease in the environment.
stage_udhcpc() {
    case "$1" in
        deconfig)
            ip addr flush dev "$interface"
            ip link set "$interface" up
            ;;
        bound|renew)
            ip addr flush dev "$interface"
            ip addr add "$ip/${mask:-24}" dev "$interface"
            if [ -n "$router" ]; then
                ip route del default dev "$interface" 2>/dev/null
                for r in $router; do
                    ip route add default via "$r" dev "$interface" && break
                done
            fi
            : > /etc/resolv.conf
            [ -n "$domain" ] && echo "search $domain" >> /etc/resolv.conf
            for d in $dns; do
                echo "nameserver $d" >> /etc/resolv.conf
            done
            log "dhcp: $interface bound to $ip/${mask:-24}"
            ;;
    esac
    return 0
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
    udhcpc) shift; stage_udhcpc "$@" ;;
    *) log "unknown stage: $1"; exit 2 ;;
esac
