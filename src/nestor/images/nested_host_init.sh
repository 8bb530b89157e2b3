#!/bin/busybox sh
# /etc/nestor/init.sh of the nestor nested-host (L1) root filesystem.
#
# PID 1 is busybox init (/sbin/init -> /bin/busybox), so `poweroff`, `reboot` and the ACPI power
# button (acpid -> /etc/acpi/PWRF/00000080 -> busybox poweroff) all work. It reads /etc/inittab,
# which runs this script in several roles, chosen by $1:
#   sysinit    ::sysinit   mount the API filesystems, hostname, the payload disk at /opt/nestor,
#                          nestor's home; then nestor serve in the background (its Python start
#                          is most of an L1's boot under TCG, so it overlaps the rest), virtio
#                          modules, modules (kvm_amd nested=1, netfilter), acpid, network.
#   ready      ::once      wait for the guest agent to hold its port, then print the boot line.
#   agent      ::respawn   qemu-ga on the virtio-serial port org.qemu.guest_agent.0.
#   api        ::respawn   nestor serve: this level's API, reached by the host over the
#                          virtio-serial port org.nestor.api.0 (the host's channel). It first
#                          waits while the one sysinit started runs (a lock held by nestor serve).
#   console    ::respawn   a login shell on the console once Enter is pressed.
#   shutdown   ::shutdown  stop daemons, sync, unmount (init then kills the rest and powers off).
#   udhcpc     the udhcpc event script (/etc/nestor/udhcpc).
#
# Kernel command line (read from /proc/cmdline):
#   nestor.hostname=NAME  nestor.ip=ADDR/PREFIX  nestor.gw=GW  nestor.dns=IP  nestor.dhcp=1
#   nestor.payload=/dev/vdX (default: the disk labelled nestor-payload, else /dev/vdb)
#
# The boot line, port names and paths come from /etc/nestor/contract.sh (rendered from
# nestor/images/contract.py); the functions it shares with the appliance's /init from
# /etc/nestor/lib.sh (guest_lib.sh). The rootfs has no util-linux mount, procps or acpid: those
# come from busybox, through the functions below (Debian's dynamic busybox sh does not prefer its
# applets by itself). iproute2 and kmod are called by their full paths (/usr/sbin/ip,
# /usr/sbin/modprobe), never busybox's.

. /etc/nestor/contract.sh  # the host <-> guest contract (nestor/images/contract.py)
BOOT_LINE="$NESTED_HOST_BOOT_LINE"
LOG_TAG=nestor-nested-host
API_LOCK=/run/nestor-serve.lock
PATH=$PAYLOAD_DIR/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PATH NESTOR_HOME

IP=/usr/sbin/ip
MODPROBE=/usr/sbin/modprobe
FLOCK=/usr/bin/flock  # util-linux (Debian's busybox has no flock)
BB=/bin/busybox
UDHCPC_SCRIPT=/etc/nestor/udhcpc

mount() { $BB mount "$@"; }
umount() { $BB umount "$@"; }
acpid() { $BB acpid "$@"; }
usleep() { $BB usleep "$@"; }
udhcpc() { $BB udhcpc "$@"; }
pidof() { $BB pidof "$@"; }

. "$GUEST_LIB"  # log, read_cmdline, is_mounted, mount_once, wait_for, find_port, setup_net, udhcpc_event

mount_api() {
    # The initramfs moved /dev, /proc and /sys here before switch_root; mount what is missing.
    mount_once proc /proc nosuid,nodev,noexec
    mount_once sysfs /sys nosuid,nodev,noexec
    mount_once devtmpfs /dev mode=0755,nosuid
    mount_once devpts /dev/pts gid=5,mode=620,ptmxmode=000
    mount_once tmpfs /dev/shm nosuid,nodev
    mount_once tmpfs /run nosuid,nodev,mode=0755
    mount_once tmpfs /tmp nosuid,nodev,mode=1777
    [ -d /run/lock ] || mkdir -p /run/lock
    [ -e /dev/fd ] || ln -s /proc/self/fd /dev/fd
}

load_virtio_modules() {
    # virtio_mmio first: on microvm it finds the virtio-mmio devices through ACPI (the initramfs
    # loaded it and virtio_blk already, for the root disk). virtio_console next: nestor serve
    # waits for its port. Few modprobe runs: each process costs ~0.1 s under TCG. kvm comes
    # with kvm_amd/kvm_intel in load_modules, after nestor serve has started.
    $MODPROBE virtio_mmio 2>/dev/null
    $MODPROBE -a virtio_console virtio_net virtio_blk virtio_balloon virtio_rng button evdev 2>/dev/null
}

load_modules() {
    # kvm_amd where the CPU has svm, kvm_intel where it has vmx; the other one fails harmlessly.
    $MODPROBE kvm_amd nested=1 2>/dev/null || $MODPROBE kvm_intel nested=1 2>/dev/null
    $MODPROBE -a tun bridge veth macvlan nf_tables nft_chain_nat nft_masq nft_nat nft_ct \
        nft_reject_inet nft_fib_inet nft_compat nf_nat nf_conntrack 2>/dev/null
    if [ -e /dev/kvm ]; then
        nested="?"
        for f in /sys/module/kvm_amd/parameters/nested /sys/module/kvm_intel/parameters/nested; do
            [ -r "$f" ] && read -r nested < "$f"
        done
        log "kvm loaded (nested=$nested)"
    else
        log "warning: no /dev/kvm (the CPU shows no svm/vmx: nesting is off for this VM)"
    fi
}

mount_payload() {
    mkdir -p "$PAYLOAD_DIR"
    is_mounted "$PAYLOAD_DIR" && return 0
    dev="$CMDLINE_payload"
    [ -n "$dev" ] || dev=/dev/vdb
    if ! wait_for "$dev" 50; then
        log "warning: no payload disk ($dev): nestor is not available"
        return 1
    fi
    if ! mount -t ext4 -o ro "$dev" "$PAYLOAD_DIR"; then
        log "warning: cannot mount the payload disk $dev"
        return 1
    fi
}

setup_home() {
    mkdir -p "$NESTOR_HOME"
    # Images come read-only from the payload; keep a real directory if someone made one.
    if [ ! -e "$NESTOR_HOME/images" ] || [ -L "$NESTOR_HOME/images" ]; then
        ln -sfn "$PAYLOAD_DIR/images" "$NESTOR_HOME/images"
    fi
}

stage_sysinit() {
    mount_api
    : > "$BOOTING_FILE"  # until the boot line: this level's nestor waits for it before reading kvm
    read_cmdline
    echo "${CMDLINE_hostname:-nestor-l1}" > /proc/sys/kernel/hostname
    # The payload disk is there already (the initramfs loaded virtio_blk for the root disk), so
    # nestor serve starts before any module is loaded: its Python start is the longest part of
    # an L1's boot under TCG, and everything below overlaps it.
    mount_payload
    setup_home
    run_api < /dev/null &
    load_virtio_modules
    load_modules
    # The ACPI power button (GED on microvm) -> evdev -> acpid -> /etc/acpi/PWRF/00000080.
    wait_for /dev/input/event0 20
    acpid -c /etc/acpi -l /run/acpid.log -p /run/acpid.pid
    setup_net
}

find_agent_port() { find_port "$AGENT_PORT_NAME"; }

stage_agent() {
    n=0
    while ! find_agent_port && [ "$n" -lt 100 ]; do
        usleep 100000
        n=$((n + 1))
    done
    if [ -z "$port" ]; then
        log "no virtio-serial port named $AGENT_PORT_NAME: no guest agent"
        exec sleep 3600  # init respawns us; do not spin
    fi
    cd /
    exec /usr/sbin/qemu-ga -m virtio-serial -p "$port"
}

# agent_holds_port: a qemu-ga process has the agent's virtio-serial port open (builtins only)
agent_holds_port() {
    find_agent_port || return 1
    for comm in /proc/[0-9]*/comm; do
        read -r name 2>/dev/null < "$comm" || continue
        [ "$name" = qemu-ga ] || continue
        for fd in "${comm%/comm}"/fd/*; do
            [ "$fd" -ef "$port" ] && return 0
        done
    done
    return 1
}

stage_ready() {
    # Wait (at most 10 s) until qemu-ga holds its port, so the agent answers once the line is out.
    n=0
    while ! agent_holds_port && [ "$n" -lt 100 ]; do
        if [ -z "$port" ] && [ "$n" -ge 20 ]; then
            break  # no agent port at all: this VM has no virtio-serial agent device
        fi
        usleep 100000
        n=$((n + 1))
    done
    agent_holds_port || log "warning: the guest agent is not running"
    read -r up _ < /proc/uptime
    log "up in $up s (kernel uptime)"
    rm -f "$BOOTING_FILE"
    echo "$BOOT_LINE" > /dev/console
}

# run_api: nestor serve on the API port, holding $API_LOCK (fd 9) for its life; waits while
# another one holds it. Returns only when there is no port (within 30 s) or no payload.
run_api() {
    n=0
    while ! find_port "$API_PORT_NAME" && [ "$n" -lt 300 ]; do  # virtio_console may still be loading
        usleep 100000
        n=$((n + 1))
    done
    if [ -z "$port" ] || [ ! -x "$PAYLOAD_DIR/bin/nestor" ]; then
        log "no virtio-serial port named $API_PORT_NAME or no nestor payload: no nestor serve"
        return 1
    fi
    exec 9> "$API_LOCK"
    $FLOCK 9
    cd /
    # --home on the command line: other nestor commands in this guest recognise their daemon by it
    exec "$PAYLOAD_DIR/bin/nestor" --home "$NESTOR_HOME" serve --channel "$port" >> "$API_LOG" 2>&1
}

stage_api() {
    run_api
    exec sleep 3600  # init respawns us; do not spin
}

stage_console() {
    if ! read -r _; then
        sleep 5  # no usable console input: do not let init respawn us in a tight loop
        exit 0
    fi
    cd /root 2>/dev/null
    exec $BB cttyhack /bin/bash -l  # busybox init already made us a session leader
}

stage_shutdown() {
    for pidfile in /run/udhcpc.eth0.pid /run/acpid.pid; do
        [ -f "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null
    done
    # L2 QEMUs get SIGTERM from init right after this; give them a moment first.
    pids="$(pidof qemu-system-x86_64)"
    if [ -n "$pids" ]; then
        kill $pids 2>/dev/null
        n=0
        while [ -n "$(pidof qemu-system-x86_64)" ] && [ "$n" -lt 30 ]; do
            usleep 100000
            n=$((n + 1))
        done
    fi
    sync
    umount "$PAYLOAD_DIR" 2>/dev/null
    umount -a -r 2>/dev/null
    mount -o remount,ro / 2>/dev/null
    sync
}

case "$1" in
    sysinit) stage_sysinit ;;
    ready) stage_ready ;;
    agent) stage_agent ;;
    api) stage_api ;;
    console) stage_console ;;
    shutdown) stage_shutdown ;;
    udhcpc) shift; udhcpc_event "$@" ;;
    *) log "unknown stage: $1"; exit 2 ;;
esac
