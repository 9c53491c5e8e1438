#!/usr/bin/env bash
# Makes a scratch root that looks like the runbook's development host.
#   bash examples/hardening/prepare.sh ./hardening-root
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=${1:?usage: prepare.sh ROOT}
mkdir -p "$root"
cp -a "$here/seed-root/." "$root/"
rm -f "$root/README.md"
chmod 0640 "$root/etc/shadow" "$root/etc/gshadow"
mkdir -p "$root/opt/intelluxe"
ln -sfn /home/intelluxe/scripts "$root/opt/intelluxe/scripts"
ln -sfn /home/intelluxe/stack "$root/opt/intelluxe/stack"
echo "prepared $root"
