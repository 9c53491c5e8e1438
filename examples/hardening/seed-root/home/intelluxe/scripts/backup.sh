#!/bin/bash
# Nightly backup of the stack data.
set -euo pipefail
tar -C /opt/intelluxe/stack -czf "/opt/intelluxe/backups/data-$(date +%F).tgz" data
