# /etc/nestor/lib.sh: the shell functions both guest inits share (the appliance's /init and the
# nested host's /etc/nestor/init.sh source it, after /etc/nestor/contract.sh).
#
# The sourcing script sets, before calling these:
#   LOG_TAG         the prefix of log lines (nestor-appliance, nestor-nested-host)
#   IP              the ip command (busybox's in the appliance, iproute2's in the nested host)
#   UDHCPC_SCRIPT   the udhcpc event script (which calls the init's udhcpc stage)
# and provides mount and usleep (busybox applets or functions calling busybox).
#
# Under TCG every new process costs ~60-90 ms, so these use shell builtins (read, case, [ ])
# wherever they can, and no $(...) in the boot path.

log() {
    echo "$LOG_TAG: $*" > /dev/console
}

# read_cmdline [FILE]: the kernel command line (/proc/cmdline), parsed once: nestor.KEY=VALUE -> $CMDLINE_KEY for each
# KEY of the contract's CONTRACT_PARAMS (CMDLINE_hostname, CMDLINE_ip, ...); others are ignored.
read_cmdline() {
    read -r CMDLINE < "${1:-/proc/cmdline}"
    for arg in $CMDLINE; do
        case "$arg" in
            "$PARAM_PREFIX"*=*) ;;
            *) continue ;;
        esac
        key="${arg#"$PARAM_PREFIX"}"
        value="${key#*=}"
        key="${key%%=*}"
        case " $CONTRACT_PARAMS " in
            *" $key "*) eval "CMDLINE_$key=\$value" ;;  # key is one of the contract's words
        esac
    done
}

# is_mounted DIR (a builtin loop over /proc/mounts; nothing is mounted before /proc is)
is_mounted() {
    [ -r /proc/mounts ] || return 1
    while read -r _dev _dir _rest; do
        [ "$_dir" = "$1" ] && return 0
    done < /proc/mounts
    return 1
}

# mount_once TYPE DIR OPTIONS [SOURCE]
mount_once() {
    [ -d "$2" ] || mkdir -p "$2"
    is_mounted "$2" || mount -t "$1" -o "$3" "${4:-$1}" "$2"
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

# find_port NAME: set $port to the /dev/vportNpM whose virtio-ports name is NAME
# (no udev here, so no /dev/virtio-ports/ symlinks)
find_port() {
    port=""
    for f in /sys/class/virtio-ports/*/name; do
        [ -f "$f" ] || continue
        read -r name < "$f"
        if [ "$name" = "$1" ]; then
            d="${f%/name}"
            port="/dev/${d##*/}"
            [ -e "$port" ] && return 0
        fi
    done
    port=""
    return 1
}

# setup_net: eth0 from the command line (read_cmdline first): a static address, DHCP, or up.
setup_net() {
    $IP link set lo up
    [ -e /sys/class/net/eth0 ] || return 0
    if [ -n "$CMDLINE_ip" ]; then
        $IP link set eth0 up
        $IP addr add "$CMDLINE_ip" dev eth0
        [ -n "$CMDLINE_gw" ] && $IP route add default via "$CMDLINE_gw" dev eth0
        [ -n "$CMDLINE_dns" ] && echo "nameserver $CMDLINE_dns" > /etc/resolv.conf
    elif [ "$CMDLINE_dhcp" = "1" ]; then
        # Stays in the background after the lease, to renew it.
        udhcpc -i eth0 -t 10 -T 1 -A 2 -n -S -p /run/udhcpc.eth0.pid \
            -s "$UDHCPC_SCRIPT" || log "dhcp on eth0 failed"
    else
        $IP link set eth0 up
    fi
}

# udhcpc_event EVENT: udhcpc calls its script with the event in $1 and the lease in the environment.
udhcpc_event() {
    case "$1" in
        deconfig)
            $IP addr flush dev "$interface"
            $IP link set "$interface" up
            ;;
        bound|renew)
            $IP addr flush dev "$interface"
            $IP addr add "$ip/${mask:-24}" dev "$interface"
            if [ -n "$router" ]; then
                $IP route del default dev "$interface" 2>/dev/null
                for r in $router; do
                    $IP route add default via "$r" dev "$interface" && break
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
