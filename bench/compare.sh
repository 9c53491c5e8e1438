#!/usr/bin/env bash
# Side-by-side with the peers (NOT run in CI): ansible-core and pyinfra, installed from
# PyPI into a virtualenv under a temporary directory, and reconcile, each converging the
# same N templated files (owner, group, mode) into its own scratch tree under that
# temporary directory -- never the machine's /etc -- first run (from empty) and no-op run.
#
#   bash bench/compare.sh                       # N = 200 and 1000 for every tool
#   ANSIBLE_SIZES=200 bash bench/compare.sh     # ansible at 200 only (1000 takes ~20 min)
#   KEEP=1 bash bench/compare.sh                # keep the temp dir for inspection
#
# Prints a markdown table with wall times and reconcile's speed-up over each peer.
set -euo pipefail

SIZES=${SIZES:-"200 1000"}
ANSIBLE_SIZES=${ANSIBLE_SIZES:-$SIZES}
PYINFRA_SIZES=${PYINFRA_SIZES:-$SIZES}
TEMPLATES=16
PER_DIR=100

here=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d /tmp/reconcile-compare.XXXXXX)
cleanup() { if [ -z "${KEEP:-}" ]; then rm -rf "$work"; else echo "kept $work" >&2; fi; }
trap cleanup EXIT

log() { echo "[compare] $*" >&2; }

log "building reconcile (release)"
(cd "$here" && cargo build --release --quiet)
reconcile="${CARGO_TARGET_DIR:-$here/target}/release/reconcile"

log "installing ansible-core and pyinfra into $work/venv"
python3 -m venv "$work/venv"
"$work/venv/bin/pip" install --quiet --disable-pip-version-check ansible-core pyinfra
ansible_version=$("$work/venv/bin/ansible-playbook" --version | head -1)
pyinfra_version=$("$work/venv/bin/pyinfra" --version 2>&1 | head -1)
export ANSIBLE_NOCOLOR=1 ANSIBLE_LOCALHOST_WARNING=False ANSIBLE_INVENTORY_UNPARSED_WARNING=False
export ANSIBLE_HOME="$work/ansible-home" ANSIBLE_LOCAL_TEMP="$work/ansible-tmp"
export PYINFRA_PROGRESS=off

now() { date +%s.%N; }
elapsed() { python3 -c "print(f'{$2 - $1:.3f}')"; }

# Shared inputs: templates valid in both Jinja2 and Tera.
mkdir -p "$work/templates"
for ((k = 0; k < TEMPLATES; k++)); do
    kk=$(printf %02d "$k")
    {
        echo "# managed: bench template $k"
        echo "app = {{ app }}"
        echo "user = {{ svc_user }}"
        for ((l = 0; l < 8; l++)); do echo "option_${k}_${l} = value $l of template $k"; done
    } >"$work/templates/t$kk.conf.j2"
done

gen_reconcile() { # N DIR
    local n=$1 dir=$2
    mkdir -p "$dir/root/etc" "$dir/manifests/templates"
    printf 'root:x:0:0:root:/root:/bin/sh\n' >"$dir/root/etc/passwd"
    printf 'root:x:0:\n' >"$dir/root/etc/group"
    cp "$work"/templates/*.j2 "$dir/manifests/templates/"
    python3 - "$n" "$dir/manifests/site.yaml" "$TEMPLATES" "$PER_DIR" <<'EOF'
import sys
n, out, t, per = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
with open(out, "w") as f:
    f.write('vars:\n  app: bench\n  svc_user: svc\nresources:\n')
    for i in range(n):
        f.write(f'  - file: /srv/bench/d{i // per:04d}/f{i:06d}.conf\n'
                f'    template: t{i % t:02d}.conf.j2\n'
                f'    owner: root\n    group: root\n    mode: "0640"\n')
EOF
}

gen_ansible() { # N DIR
    local n=$1 dir=$2
    mkdir -p "$dir/dest"
    python3 - "$n" "$dir" "$work/templates" "$TEMPLATES" "$PER_DIR" <<'EOF'
import sys
n, d, tdir, t, per = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
dirs = sorted({i // per for i in range(n)})
with open(f"{d}/site.yml", "w") as f:
    f.write(f"""- hosts: localhost
  connection: local
  gather_facts: false
  vars:
    app: bench
    svc_user: svc
    dest: {d}/dest
  tasks:
    - name: directories
      ansible.builtin.file:
        path: "{{{{ dest }}}}/srv/bench/d{{{{ '%04d' % item }}}}"
        state: directory
        mode: "0755"
      loop: {dirs}
    - name: files
      ansible.builtin.template:
        src: "{tdir}/t{{{{ '%02d' % (item % {t}) }}}}.conf.j2"
        dest: "{{{{ dest }}}}/srv/bench/d{{{{ '%04d' % (item // {per}) }}}}/f{{{{ '%06d' % item }}}}.conf"
        owner: root
        group: root
        mode: "0640"
      loop: "{{{{ range(0, {n}) | list }}}}"
""")
with open(f"{d}/inventory", "w") as f:
    f.write("localhost ansible_connection=local ansible_python_interpreter={{ ansible_playbook_python }}\n")
EOF
}

gen_pyinfra() { # N DIR
    local n=$1 dir=$2
    mkdir -p "$dir/dest"
    python3 - "$n" "$dir" "$work/templates" "$TEMPLATES" "$PER_DIR" <<'EOF'
import sys
n, d, tdir, t, per = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
with open(f"{d}/deploy.py", "w") as f:
    f.write(f"""from pyinfra.operations import files

for i in range({n}):
    files.template(
        name=f"file {{i}}",
        src=f"{tdir}/t{{i % {t}:02d}}.conf.j2",
        dest=f"{d}/dest/srv/bench/d{{i // {per}:04d}}/f{{i:06d}}.conf",
        user="root",
        group="root",
        mode="640",
        create_remote_dir=True,
        app="bench",
        svc_user="svc",
    )
""")
EOF
}

# run LABEL DIR CMD... : prints seconds; fails loudly on a non-zero exit.
run() {
    local label=$1 dir=$2
    shift 2
    local t0 t1
    t0=$(now)
    if ! (cd "$dir" && "$@") >"$dir/$label.log" 2>&1; then
        log "$label failed; last lines of $dir/$label.log:"
        tail -20 "$dir/$label.log" >&2
        exit 1
    fi
    t1=$(now)
    local secs
    secs=$(elapsed "$t0" "$t1")
    log "  $label: $secs s"
    echo "$secs"
}

# Same file contents from every tool: checks one file of each against reconcile's.
same_content() { # reconcile_file other_file
    cmp -s "$1" "$2" || { log "content differs: $1 vs $2"; exit 1; }
}

declare -A R
for n in $SIZES; do
    d="$work/reconcile-$n"
    gen_reconcile "$n" "$d"
    log "reconcile N=$n"
    R[rc_first_$n]=$(run first "$d" "$reconcile" apply -q --root "$d/root" "$d/manifests")
    R[rc_noop_$n]=$(run noop "$d" "$reconcile" check -q --root "$d/root" "$d/manifests")
done

for n in $PYINFRA_SIZES; do
    d="$work/pyinfra-$n"
    gen_pyinfra "$n" "$d"
    log "pyinfra N=$n (first run)"
    R[py_first_$n]=$(run first "$d" "$work/venv/bin/pyinfra" -y @local deploy.py)
    log "pyinfra N=$n (no-op run)"
    R[py_noop_$n]=$(run noop "$d" "$work/venv/bin/pyinfra" -y @local deploy.py)
    if [ -d "$work/reconcile-$n" ]; then
        same_content "$work/reconcile-$n/root/srv/bench/d0000/f000001.conf" "$d/dest/srv/bench/d0000/f000001.conf"
    fi
done

for n in $ANSIBLE_SIZES; do
    d="$work/ansible-$n"
    gen_ansible "$n" "$d"
    log "ansible N=$n (first run)"
    R[an_first_$n]=$(run first "$d" "$work/venv/bin/ansible-playbook" -i inventory site.yml)
    log "ansible N=$n (no-op run)"
    R[an_noop_$n]=$(run noop "$d" "$work/venv/bin/ansible-playbook" -i inventory site.yml)
    grep -q "changed=0" "$d/noop.log" || { log "ansible no-op run changed something"; exit 1; }
    if [ -d "$work/reconcile-$n" ]; then
        same_content "$work/reconcile-$n/root/srv/bench/d0000/f000001.conf" "$d/dest/srv/bench/d0000/f000001.conf"
    fi
done

ratio() { python3 -c "print(f'{$1 / $2:,.0f}×' if $2 > 0 else '–')"; }
cell() { local v=${R[$1]:-}; if [ -n "$v" ]; then echo "$v s"; else echo "–"; fi; }
speedup() { # peer_key reconcile_key
    local p=${R[$1]:-} r=${R[$2]:-}
    if [ -n "$p" ] && [ -n "$r" ]; then ratio "$p" "$r"; else echo "–"; fi
}

echo
echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(df -T "$work" | awk 'NR==2 {print $2}') temp dir"
echo "peers: $ansible_version; $pyinfra_version"
echo
echo "| tool | files | first run | no-op run | reconcile faster (first) | reconcile faster (no-op) |"
echo "|---|---:|---:|---:|---:|---:|"
for n in $SIZES; do
    echo "| reconcile | $n | $(cell rc_first_$n) | $(cell rc_noop_$n) | | |"
    if [ -n "${R[py_first_$n]:-}" ]; then
        echo "| pyinfra | $n | $(cell py_first_$n) | $(cell py_noop_$n) | $(speedup py_first_$n rc_first_$n) | $(speedup py_noop_$n rc_noop_$n) |"
    fi
    if [ -n "${R[an_first_$n]:-}" ]; then
        echo "| ansible-core | $n | $(cell an_first_$n) | $(cell an_noop_$n) | $(speedup an_first_$n rc_first_$n) | $(speedup an_noop_$n rc_noop_$n) |"
    fi
done
exit 0
