#!/usr/bin/env bash
# Builds (once) the Debian bookworm image that tests boot as throwaway hosts with
# systemd-nspawn. See docs/testhosts.md.
#
#   bash scripts/testhost-image.sh [DIR]      (default /var/tmp/reconcile-testhost/bookworm)
#
# Idempotent: a finished image carries a stamp naming the recipe below; an image
# with the same stamp is kept, anything else (half-built, older recipe) is rebuilt.
# Needs root. Only touches the machine by installing debootstrap and
# systemd-container (without recommends) when they are missing.
set -euo pipefail

DIR="${1:-/var/tmp/reconcile-testhost/bookworm}"
DIR="${DIR%/}"
SUITE=bookworm
INCLUDE=systemd,dbus,logrotate,nftables,passwd,openssh-server,netbase,iproute2,procps,auditd
# Bump when the preparation steps change so existing images get rebuilt.
RECIPE="reconcile-testhost v2 $SUITE $INCLUDE"
STAMP=.reconcile-testhost-stamp
# debootstrap and nspawn live in sbin, which a CI shell may not have on PATH.
export PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:$PATH"

log() { printf 'testhost-image: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root (debootstrap and systemd-nspawn need it)"

# --no-install-recommends matters: systemd-container recommends libnss-mymachines,
# which would edit the machine's nsswitch.conf.
need=()
command -v debootstrap >/dev/null 2>&1 || need+=(debootstrap)
command -v systemd-nspawn >/dev/null 2>&1 || need+=(systemd-container)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
if [ "${#need[@]}" -gt 0 ]; then
    log "installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >&2
    apt-get install -y -q --no-install-recommends "${need[@]}" >&2
fi
for tool in debootstrap systemd-nspawn nsenter ip setsid flock; do
    command -v "$tool" >/dev/null 2>&1 || die "missing tool: $tool"
done

if [ -f "$DIR/$STAMP" ] && [ "$(cat "$DIR/$STAMP")" = "$RECIPE" ]; then
    log "image up to date: $DIR"
    exit 0
fi

# The mirror comes from the machine's own apt sources, so the build uses whatever
# this machine is allowed to reach. Prefer the stanza/line for the release suite
# itself (not -security/-updates).
SOURCES=""
MIRROR=""
if [ -f /etc/apt/sources.list.d/debian.sources ]; then
    SOURCES=/etc/apt/sources.list.d/debian.sources
    MIRROR="$(awk -v suite="$SUITE" '
        function flush() {
            if (uris != "" && first == "") first = uris
            if (uris != "" && match_suite && pick == "") pick = uris
            uris = ""; match_suite = 0
        }
        /^[[:space:]]*$/ { flush(); next }
        /^URIs:/ { uris = $2 }
        /^Suites:/ { for (i = 2; i <= NF; i++) if ($i == suite) match_suite = 1 }
        END { flush(); print (pick != "" ? pick : first) }
    ' "$SOURCES")"
elif [ -f /etc/apt/sources.list ]; then
    SOURCES=/etc/apt/sources.list
    # deb [opts] URI SUITE COMPONENTS...
    MIRROR="$(awk -v suite="$SUITE" '
        $1 == "deb" {
            i = 2
            if ($i ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
            if (first == "") first = $i
            if ($(i + 1) == suite && pick == "") pick = $i
        }
        END { print (pick != "" ? pick : first) }
    ' "$SOURCES")"
fi
[ -n "$MIRROR" ] || die "no Debian mirror found in /etc/apt/sources.list.d/debian.sources or /etc/apt/sources.list"

mkdir -p "$(dirname "$DIR")"
# Serialise concurrent builds (two test runs starting at once).
exec 9>"$DIR.lock"
flock 9
if [ -f "$DIR/$STAMP" ] && [ "$(cat "$DIR/$STAMP")" = "$RECIPE" ]; then
    log "image built by a concurrent run: $DIR"
    exit 0
fi

# A failed debootstrap can leave proc/sys mounted inside its target: unmount
# before deleting so rm never walks into the machine's /proc or /sys.
remove_tree() {
    local d="$1"
    [ -e "$d" ] || return 0
    local real
    real="$(realpath "$d")"
    awk -v p="$real/" 'index($2 "/", p) == 1 { print $2 }' /proc/self/mounts | sort -r |
        while read -r m; do umount -l "$m" || true; done
    rm -rf --one-file-system "$d"
}

TMP="$DIR.tmp"
remove_tree "$TMP"
log "debootstrap $SUITE from $MIRROR into $TMP"
start=$(date +%s)
debootstrap --variant=minbase --include="$INCLUDE" "$SUITE" "$TMP" "$MIRROR" >&2

# The image's apt sees the same sources as the machine; drop debootstrap's own
# one-line list so apt does not warn about duplicates.
if [ "$SOURCES" = /etc/apt/sources.list.d/debian.sources ]; then
    rm -f "$TMP/etc/apt/sources.list"
    install -m 0644 "$SOURCES" "$TMP/etc/apt/sources.list.d/debian.sources"
else
    install -m 0644 "$SOURCES" "$TMP/etc/apt/sources.list"
fi

# etc/hostname would override --hostname.
rm -f "$TMP/etc/hostname"
# An empty machine-id makes systemd generate one per boot, so every host differs;
# dbus must read the same one.
: >"$TMP/etc/machine-id"
mkdir -p "$TMP/var/lib/dbus"
ln -sfn /etc/machine-id "$TMP/var/lib/dbus/machine-id"
# These fire on first boot and race the tests (apt locks, dpkg backups, disk
# scans); console-getty fights --console=passive.
mkdir -p "$TMP/etc/systemd/system"
for unit in apt-daily.timer apt-daily-upgrade.timer dpkg-db-backup.timer e2scrub_all.timer \
    fstrim.timer console-getty.service; do
    ln -sfn /dev/null "$TMP/etc/systemd/system/$unit"
done
# auditd (for the audit_rule tests) cannot run in a container: the audit netlink
# socket belongs to the initial namespaces, so it fails and restarts in a loop.
# Disabled here; a test that wants it starts it and reports why it could not.
systemctl --root="$TMP" disable auditd.service >&2 2>/dev/null || rm -f "$TMP/etc/systemd/system/multi-user.target.wants/auditd.service"
# Where tests bind the reconcile binary.
mkdir -p "$TMP/opt/reconcile/bin"

chroot "$TMP" apt-get clean

printf '%s\n' "$RECIPE" >"$TMP/$STAMP"
remove_tree "$DIR"
mv "$TMP" "$DIR"
log "image ready: $DIR ($(du -sh "$DIR" | cut -f1), $(($(date +%s) - start)) s)"
