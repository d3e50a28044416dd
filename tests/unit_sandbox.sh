#!/bin/sh
# Runs a command under what deploy/systemd/deskbot.service asks of systemd, as far as a
# machine without systemd as PID 1 allows: a mount namespace where every file system is
# read-only (ProtectSystem=strict) but STATE at /var/lib/deskbot (StateDirectory=), empty
# /tmp, /var/tmp (PrivateTmp=), /home, /root (ProtectHome=); then an unprivileged user with
# no capabilities and no_new_privs (DynamicUser=, CapabilityBoundingSet=, NoNewPrivileges=)
# and UMask=0077, in the state folder (WorkingDirectory=).
# Use: unshare -m unit_sandbox.sh STATE KEEP CMD... where KEEP is a colon-separated list of
# folders under /tmp, /var/tmp, /home or /root that stay visible, read-only (a pyenv Python,
# a checkout and its venv: installed units run from /opt), or "".
set -eu
state=$1
keep=$2
shift 2
mount --make-rprivate /
mount -t tmpfs -o mode=0755 tmpfs /var/lib
mkdir /var/lib/deskbot
mount --bind "$state" /var/lib/deskbot
n=0
IFS=:
for k in $keep; do n=$((n + 1)); mkdir "/var/lib/.keep$n" && mount --bind "$k" "/var/lib/.keep$n"; done
unset IFS
awk '{print $5}' /proc/self/mountinfo | sort -u | while read -r m; do
  case $m in /proc | /proc/* | /sys | /sys/* | /dev | /dev/* | /var/lib/deskbot) continue ;; esac
  mount -o remount,bind,ro "$m" 2>/dev/null || true
done
for d in /tmp /var/tmp /home /root; do mount -n -t tmpfs -o mode=0755 tmpfs "$d"; done
n=0
IFS=:
for k in $keep; do n=$((n + 1)); mkdir -p "$k" && mount -n --move "/var/lib/.keep$n" "$k"; done
unset IFS
cd /var/lib/deskbot
umask 0077
exec setpriv --reuid=65534 --regid=65534 --clear-groups --no-new-privs \
  --bounding-set=-all --inh-caps=-all "$@"
