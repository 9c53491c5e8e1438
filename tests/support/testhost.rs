//! Throwaway Debian hosts with a real systemd, booted by `systemd-nspawn` from the
//! image that `scripts/testhost-image.sh` builds. Each host lives in its own network
//! namespace, so nothing a test does inside (nft, ip, systemctl) reaches the machine.
//! See docs/testhosts.md for the recipe, the pitfalls and the measured costs.
//!
//! Only std (plus the `tempfile` dev-dependency): every test binary compiles this file.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Where `scripts/testhost-image.sh` puts the image unless told otherwise.
pub const DEFAULT_IMAGE: &str = "/var/tmp/reconcile-testhost/bookworm";
/// Overrides [`DEFAULT_IMAGE`] (same variable as the script's first argument).
pub const IMAGE_ENV: &str = "RECONCILE_TESTHOST_IMAGE";
/// The stamp the image script writes last; an image without it is half-built.
const IMAGE_STAMP: &str = ".reconcile-testhost-stamp";
/// Where the reconcile binary appears inside every host that gets one.
pub const RECONCILE_IN_HOST: &str = "/opt/reconcile/bin/reconcile";

pub const DEFAULT_BOOT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long Drop waits for an orderly poweroff before killing the host.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(20);
pub const DEFAULT_EXEC_TIMEOUT: Duration = Duration::from_secs(120);

const CLEAN_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
const TOOLS: [&str; 5] = ["systemd-nspawn", "nsenter", "ip", "setsid", "tar"];

/// Names must be unique across parallel test threads *and* test binaries, and
/// short enough for interface names (15 bytes) derived from them.
static COUNTER: AtomicU32 = AtomicU32::new(0);

fn unique_name(prefix: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    format!("{prefix}{}-{n}", std::process::id())
}

/// What a command run inside a host left behind. `status` is the exit code, 128+N
/// for a signal N, and -1 when the command could not start or timed out (the
/// reason is then in `stderr`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    pub status: i32,
    pub stdout: String,
    pub stderr: String,
}

impl ExecOutput {
    pub fn success(&self) -> bool {
        self.status == 0
    }

    fn failed(reason: String) -> ExecOutput {
        ExecOutput {
            status: -1,
            stdout: String::new(),
            stderr: reason,
        }
    }
}

impl std::fmt::Display for ExecOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "status {}\n--- stdout ---\n{}--- stderr ---\n{}",
            self.status, self.stdout, self.stderr
        )
    }
}

/// Raw result of a machine-side process: bytes, since read_file needs them.
struct RawOutput {
    status: i32,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

impl RawOutput {
    fn text(self) -> ExecOutput {
        ExecOutput {
            status: self.status,
            stdout: String::from_utf8_lossy(&self.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&self.stderr).into_owned(),
        }
    }
}

/// Runs `cmd` to completion with a timeout; never panics. stdin is either the
/// given bytes, a pipe from another process, or /dev/null.
fn run(mut cmd: Command, stdin: Input, timeout: Duration) -> RawOutput {
    let shown = format!("{cmd:?}");
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let data = match stdin {
        Input::Null => {
            cmd.stdin(Stdio::null());
            None
        }
        Input::Bytes(b) => {
            cmd.stdin(Stdio::piped());
            Some(b)
        }
        Input::Stdio(s) => {
            cmd.stdin(s);
            None
        }
    };
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            return RawOutput {
                status: -1,
                stdout: Vec::new(),
                stderr: format!("cannot start {shown}: {e}").into_bytes(),
            }
        }
    };
    if let (Some(data), Some(mut pipe)) = (data, child.stdin.take()) {
        // A writer thread, so a command that does not read its input cannot
        // dead-lock against full stdout/stderr pipes.
        std::thread::spawn(move || {
            let _ = pipe.write_all(&data);
        });
    }
    let out = child.stdout.take().map(read_all);
    let err = child.stderr.take().map(read_all);
    let status = wait_timeout(&mut child, timeout);
    let collect = |h: Option<std::thread::JoinHandle<Vec<u8>>>| {
        h.and_then(|h| h.join().ok()).unwrap_or_default()
    };
    let (status, note) = match status {
        Some(s) => (exit_code(s), None),
        None => {
            let _ = child.kill();
            let _ = child.wait();
            (-1, Some(format!("\n{shown} timed out after {timeout:?}")))
        }
    };
    let mut stderr = collect(err);
    if let Some(n) = note {
        stderr.extend_from_slice(n.as_bytes());
    }
    RawOutput {
        status,
        stdout: collect(out),
        stderr,
    }
}

enum Input {
    Null,
    Bytes(Vec<u8>),
    Stdio(Stdio),
}

fn read_all<R: Read + Send + 'static>(mut r: R) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        buf
    })
}

fn exit_code(s: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    match (s.code(), s.signal()) {
        (Some(c), _) => c,
        (None, Some(sig)) => 128 + sig,
        (None, None) => -1,
    }
}

/// Some(status) once the child exits, None when `timeout` passes first.
fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    let start = Instant::now();
    let mut pause = Duration::from_millis(1);
    loop {
        match child.try_wait() {
            Ok(Some(s)) => return Some(s),
            Ok(None) if start.elapsed() >= timeout => return None,
            Ok(None) => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(50));
            }
            Err(_) => return None,
        }
    }
}

/// A machine-side command with a clean environment: the test process's
/// environment (RUST_*, CARGO_*, a developer's PATH) must not leak into hosts.
fn machine_cmd(program: &str) -> Command {
    let mut c = Command::new(program);
    c.env_clear().env("PATH", CLEAN_PATH).env("LC_ALL", "C");
    c
}

/// Runs a machine-side tool and turns failure into an error naming it.
fn machine(program: &str, args: &[&str]) -> Result<(), String> {
    let mut c = machine_cmd(program);
    c.args(args);
    let out = run(c, Input::Null, Duration::from_secs(30)).text();
    if out.success() {
        Ok(())
    } else {
        Err(format!(
            "{program} {} failed ({}): {}",
            args.join(" "),
            out.status,
            out.stderr.trim()
        ))
    }
}

fn tool_exists(name: &str) -> bool {
    CLEAN_PATH
        .split(':')
        .any(|d| Path::new(d).join(name).is_file())
}

fn effective_uid() -> Option<u32> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

/// The image hosts boot from: $RECONCILE_TESTHOST_IMAGE or [`DEFAULT_IMAGE`].
pub fn image_dir() -> PathBuf {
    match std::env::var_os(IMAGE_ENV) {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => PathBuf::from(DEFAULT_IMAGE),
    }
}

/// The cgroup directories a container gets its own child of. On the hybrid layout
/// measured here both the v1 `name=systemd` hierarchy and the v2 one at `unified`
/// need it; a pure v2 machine has only the root.
fn cgroup_roots() -> Vec<PathBuf> {
    let base = Path::new("/sys/fs/cgroup");
    if base.join("cgroup.controllers").exists() {
        return vec![base.to_path_buf()];
    }
    [base.join("systemd"), base.join("unified")]
        .into_iter()
        .filter(|p| p.join("cgroup.procs").exists())
        .collect()
}

/// nspawn's `--bind-ro=SRC:DST` splits on ':'; it takes backslash escapes.
fn nspawn_escape(p: &str) -> String {
    p.replace('\\', "\\\\").replace(':', "\\:")
}

/// Single-quotes for /bin/sh.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// Pure: where in a v1/v2 cgroup tree of the machine a name goes. Kept apart so
/// the (recursive) removal can never climb above it.
fn cgroup_dirs(name: &str) -> Vec<PathBuf> {
    cgroup_roots().into_iter().map(|r| r.join(name)).collect()
}

/// Removes a cgroup directory tree bottom-up. cgroupfs allows only rmdir, and a
/// cgroup whose last process is still exiting is busy for a moment, so retry.
fn remove_cgroup(dir: &Path) {
    for _ in 0..50 {
        if !dir.exists() || rmdir_tree(dir).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// SIGKILLs every process in these cgroups (v2 cgroup.kill when the kernel has
/// it, else pid by pid).
fn kill_cgroup_procs(dirs: &[PathBuf]) {
    for dir in dirs {
        let killer = dir.join("cgroup.kill");
        if killer.exists() && fs::write(&killer, "1").is_ok() {
            continue;
        }
        let pids = cgroup_pids(dir);
        if !pids.is_empty() {
            let mut args = vec!["-KILL".to_string()];
            args.extend(pids.iter().map(u32::to_string));
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let _ = machine("kill", &args);
        }
    }
}

/// The pid of the test process that made a host or net name ("rth<pid>-<n>",
/// "rtn<pid>-<n>"), None for names that are not ours.
fn owner_pid(name: &str) -> Option<u32> {
    let rest = name
        .strip_prefix("rth")
        .or_else(|| name.strip_prefix("rtn"))?;
    let (pid, n) = rest.split_once('-')?;
    n.parse::<u32>().ok()?;
    pid.parse().ok()
}

/// A name made by a test process that no longer exists: a run killed before its
/// Drops ran (Ctrl-C, a CI timeout). setsid keeps its hosts running after that.
fn is_stale(name: &str) -> bool {
    owner_pid(name).is_some_and(|pid| !pid_alive(pid))
}

fn dir_names(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Removes what killed test runs left: their hosts (processes, cgroups), network
/// namespaces and propagate dirs. Only names of dead test processes are touched,
/// so parallel runs are safe. `TestHost::boot` runs it once per process.
pub fn sweep_stale() {
    for root in cgroup_roots() {
        for name in dir_names(&root).into_iter().filter(|n| is_stale(n)) {
            let dir = root.join(&name);
            // Init first, so its nspawn reaps it instead of the machine's PID 1.
            for pid in cgroup_pids(&dir) {
                if comm(pid) == "systemd-nspawn" {
                    for c in children(pid) {
                        let _ = machine("kill", &["-KILL", &c.to_string()]);
                    }
                    wait_gone(pid, Duration::from_secs(3));
                }
            }
            kill_cgroup_procs(std::slice::from_ref(&dir));
            remove_cgroup(&dir);
        }
    }
    for name in dir_names(Path::new("/run/netns"))
        .into_iter()
        .filter(|n| is_stale(n))
    {
        let _ = machine("ip", &["netns", "del", &name]);
    }
    // Boot logs: "rth<pid>-<n>-<random>" in the temp dir.
    let tmp = std::env::temp_dir();
    for name in dir_names(&tmp) {
        if name
            .rsplit_once('-')
            .is_some_and(|(host, _)| host.starts_with("rth") && is_stale(host))
        {
            let _ = fs::remove_dir_all(tmp.join(&name));
        }
    }
    let propagate = Path::new("/run/systemd/nspawn/propagate");
    for name in dir_names(propagate).into_iter().filter(|n| is_stale(n)) {
        let p = propagate.join(name);
        if !is_mount_point(&p) {
            let _ = fs::remove_dir_all(&p);
        }
    }
}

static SWEEP: std::sync::Once = std::sync::Once::new();

/// Pids in a cgroup and all its descendants.
fn cgroup_pids(dir: &Path) -> Vec<u32> {
    let mut pids: Vec<u32> = fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect();
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                pids.extend(cgroup_pids(&e.path()));
            }
        }
    }
    pids
}

fn rmdir_tree(dir: &Path) -> std::io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            rmdir_tree(&entry.path())?;
        }
    }
    fs::remove_dir(dir)
}

fn pid_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Waits until `pid` has exited (gone or a zombie), at most `timeout`.
fn wait_gone(pid: u32, timeout: Duration) {
    let start = Instant::now();
    while start.elapsed() < timeout {
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // The state follows the parenthesised command name, which may hold spaces.
        let state = stat
            .rsplit_once(')')
            .and_then(|(_, r)| r.split_whitespace().next());
        if matches!(state, None | Some("Z") | Some("X")) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Children of `pid` across all its threads, from /proc (CONFIG_PROC_CHILDREN).
fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for t in tasks.flatten() {
        if let Ok(s) = fs::read_to_string(t.path().join("children")) {
            out.extend(s.split_whitespace().filter_map(|p| p.parse::<u32>().ok()));
        }
    }
    out
}

fn comm(pid: u32) -> String {
    fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn tail(path: &Path, lines: usize) -> String {
    let text = fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Whether `path` is a mount point on the machine (so we never rm -rf through one).
fn is_mount_point(path: &Path) -> bool {
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return true;
    };
    let want = path.to_string_lossy();
    info.lines()
        .filter_map(|l| l.split_whitespace().nth(4))
        .any(|m| m == want)
}

/// Ok(()) when hosts can be booted here from the default image, else why not.
pub fn available() -> Result<(), String> {
    available_with(&image_dir())
}

fn available_with(image: &Path) -> Result<(), String> {
    match effective_uid() {
        Some(0) => {}
        Some(uid) => return Err(format!("test hosts need root (running as uid {uid})")),
        None => return Err("cannot read the effective uid from /proc/self/status".into()),
    }
    let missing: Vec<&str> = TOOLS.iter().copied().filter(|t| !tool_exists(t)).collect();
    if !missing.is_empty() {
        return Err(format!(
            "missing tools: {} (run `bash scripts/testhost-image.sh`, which installs them)",
            missing.join(", ")
        ));
    }
    if !image.join(IMAGE_STAMP).is_file() {
        return Err(format!(
            "no finished test-host image at {} (run `bash scripts/testhost-image.sh`)",
            image.display()
        ));
    }
    if cgroup_roots().is_empty() {
        return Err("no usable cgroup hierarchy under /sys/fs/cgroup".into());
    }
    Ok(())
}

/// Boots a host with the reconcile binary bound in when the caller is an
/// integration test of the main crate; skips (prints why, returns None) when hosts
/// are unavailable here, but panics under CI=true, where everything must run.
/// A host that is available but fails to boot always panics.
pub fn boot_or_skip(test: &str) -> Option<TestHost> {
    TestHost::builder().boot_or_skip(test)
}

/// True when the CI contract applies: skipping is a failure there.
pub fn in_ci() -> bool {
    std::env::var("CI").map(|v| v == "true").unwrap_or(false)
}

/// Skips or (under CI=true) panics when hosts are unavailable; the shared gate
/// for tests that need hosts but build them their own way.
pub fn require_or_skip(test: &str) -> bool {
    require_with(test, &image_dir())
}

fn require_with(test: &str, image: &Path) -> bool {
    match available_with(image) {
        Ok(()) => true,
        Err(reason) if in_ci() => panic!("{test}: test hosts unavailable under CI=true: {reason}"),
        Err(reason) => {
            eprintln!("skipping {test}: {reason}");
            false
        }
    }
}

/// How a host is booted. `TestHost::builder().bind_ro(a, b).boot()`.
#[derive(Debug, Clone)]
pub struct Builder {
    image: PathBuf,
    binds: Vec<(PathBuf, String)>,
    reconcile: Option<PathBuf>,
    boot_timeout: Duration,
    shutdown_timeout: Duration,
    net: Option<TestNet>,
}

impl Default for Builder {
    fn default() -> Self {
        Builder {
            image: image_dir(),
            binds: Vec::new(),
            // Set by cargo only for integration tests of a crate with a `reconcile`
            // bin; option_env keeps this file usable from scratch crates too.
            reconcile: option_env!("CARGO_BIN_EXE_reconcile").map(PathBuf::from),
            boot_timeout: DEFAULT_BOOT_TIMEOUT,
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
            net: None,
        }
    }
}

impl Builder {
    /// Another image directory (default: $RECONCILE_TESTHOST_IMAGE or DEFAULT_IMAGE).
    pub fn image(mut self, dir: impl Into<PathBuf>) -> Self {
        self.image = dir.into();
        self
    }

    /// Binds a machine file or directory read-only at `inside`.
    pub fn bind_ro(mut self, machine: impl Into<PathBuf>, inside: &str) -> Self {
        self.binds.push((machine.into(), inside.to_string()));
        self
    }

    /// Binds this binary read-only as /opt/reconcile/bin/reconcile (replacing the
    /// default CARGO_BIN_EXE_reconcile).
    pub fn with_reconcile(mut self, binary: impl Into<PathBuf>) -> Self {
        self.reconcile = Some(binary.into());
        self
    }

    /// No reconcile binary inside.
    pub fn without_reconcile(mut self) -> Self {
        self.reconcile = None;
        self
    }

    pub fn boot_timeout(mut self, t: Duration) -> Self {
        self.boot_timeout = t;
        self
    }

    /// How long Drop waits for an orderly poweroff before killing everything.
    pub fn shutdown_timeout(mut self, t: Duration) -> Self {
        self.shutdown_timeout = t;
        self
    }

    /// Joins the host to `net` (a bridge in a controller namespace) with the next
    /// free address; see [`TestHost::ip`].
    pub fn network(mut self, net: &TestNet) -> Self {
        self.net = Some(net.clone());
        self
    }

    pub fn boot_or_skip(self, test: &str) -> Option<TestHost> {
        if !require_with(test, &self.image) {
            return None;
        }
        match self.boot() {
            Ok(h) => Some(h),
            Err(e) => panic!("{test}: booting a test host failed: {e}"),
        }
    }

    pub fn boot(self) -> Result<TestHost, String> {
        available_with(&self.image)?;
        SWEEP.call_once(sweep_stale);
        let name = unique_name("rth");
        let workdir = tempfile::Builder::new()
            .prefix(&format!("{name}-"))
            .tempdir()
            .map_err(|e| format!("cannot make a temp dir: {e}"))?;
        let log = workdir.path().join("nspawn.log");
        // The host owns everything from here on: on any error below, dropping it
        // undoes what was made so far.
        let mut host = TestHost {
            name: name.clone(),
            netns: name.clone(),
            cgroups: Vec::new(),
            nspawn: Mutex::new(None),
            leader: 0,
            log: log.clone(),
            ip: None,
            net: None,
            netns_made: false,
            shutdown_timeout: self.shutdown_timeout,
            _workdir: workdir,
        };
        let started = Instant::now();
        host.make_netns(self.net.as_ref())?;
        host.make_cgroups()?;
        host.spawn(&self)?;
        host.wait_leader(started, self.boot_timeout)?;
        host.wait_running_until(started, self.boot_timeout)?;
        Ok(host)
    }
}

/// A booted throwaway host. Dropping it powers it off and removes every trace:
/// the nspawn process, its network namespace, cgroup dirs and propagate dir.
#[derive(Debug)]
pub struct TestHost {
    name: String,
    netns: String,
    cgroups: Vec<PathBuf>,
    // A Mutex so liveness checks (try_wait) work through &self.
    nspawn: Mutex<Option<Child>>,
    leader: u32,
    log: PathBuf,
    ip: Option<String>,
    net: Option<TestNet>,
    netns_made: bool,
    shutdown_timeout: Duration,
    // Holds nspawn's log; removed last.
    _workdir: tempfile::TempDir,
}

impl TestHost {
    /// Ok(()) if hosts can be booted here, else the reason.
    pub fn available() -> Result<(), String> {
        available()
    }

    pub fn builder() -> Builder {
        Builder::default()
    }

    /// Boots with the defaults (reconcile bound in when compiled into a main-crate
    /// integration test).
    pub fn boot() -> Result<TestHost, String> {
        Builder::default().boot()
    }

    /// Machine name, hostname, network namespace and cgroup name at once.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The network namespace (under /run/netns) the host runs in.
    pub fn netns(&self) -> &str {
        &self.netns
    }

    /// The host's address on its [`TestNet`], when booted with one.
    pub fn ip(&self) -> Option<&str> {
        self.ip.as_deref()
    }

    /// Machine-side pid of the container's init, for tools that take a pid.
    pub fn leader_pid(&self) -> u32 {
        self.leader
    }

    /// nspawn's console and error output so far (for failure messages).
    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.log, lines)
    }

    fn make_netns(&mut self, net: Option<&TestNet>) -> Result<(), String> {
        // A stale namespace of a crashed run whose pid was reused: ours now.
        if Path::new("/run/netns").join(&self.netns).exists() {
            let _ = machine("ip", &["netns", "del", &self.netns]);
        }
        machine("ip", &["netns", "add", &self.netns])?;
        self.netns_made = true;
        machine("ip", &["-n", &self.netns, "link", "set", "lo", "up"])?;
        if let Some(net) = net {
            self.ip = Some(net.attach(&self.netns)?);
            self.net = Some(net.clone());
        }
        Ok(())
    }

    fn make_cgroups(&mut self) -> Result<(), String> {
        for dir in cgroup_dirs(&self.name) {
            // Left by an earlier process that had our pid: nothing of ours.
            if dir.exists() {
                kill_cgroup_procs(std::slice::from_ref(&dir));
                remove_cgroup(&dir);
            }
            fs::create_dir(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
            self.cgroups.push(dir);
        }
        Ok(())
    }

    fn spawn(&mut self, b: &Builder) -> Result<(), String> {
        let mut args: Vec<String> = vec![
            "-q".into(),
            "-D".into(),
            b.image.to_string_lossy().into_owned(),
            // Writes go to a tmpfs overlay: the image stays pristine and boot is
            // ~0.4 s (--ephemeral would copy the tree, ~7 s).
            "--volatile=overlay".into(),
            "-b".into(),
            "-M".into(),
            self.name.clone(),
            format!("--hostname={}", self.name),
            format!("--uuid={}", random_uuid()?),
            format!("--network-namespace-path=/run/netns/{}", self.netns),
            "--capability=CAP_NET_ADMIN".into(),
            // No machined on the machine: registering fails ("Failed to open
            // system bus"), and --keep-unit makes nspawn use the cgroup we made.
            "--register=no".into(),
            "--keep-unit".into(),
            "--console=passive".into(),
        ];
        let mut binds = b.binds.clone();
        if let Some(bin) = &b.reconcile {
            if !bin.is_file() {
                return Err(format!("reconcile binary {} does not exist", bin.display()));
            }
            binds.push((bin.clone(), RECONCILE_IN_HOST.to_string()));
        }
        for (src, dst) in &binds {
            if !src.exists() {
                return Err(format!("bind source {} does not exist", src.display()));
            }
            if !dst.starts_with('/') {
                return Err(format!("bind target {dst} is not absolute"));
            }
            args.push(format!(
                "--bind-ro={}:{}",
                nspawn_escape(&src.to_string_lossy()),
                nspawn_escape(dst)
            ));
        }
        let log = fs::File::create(&self.log)
            .map_err(|e| format!("cannot create {}: {e}", self.log.display()))?;
        let log2 = log
            .try_clone()
            .map_err(|e| format!("cannot dup the log file: {e}"))?;
        let procs: Vec<String> = self
            .cgroups
            .iter()
            .map(|d| d.join("cgroup.procs").to_string_lossy().into_owned())
            .collect();
        // The shell joins the container's own cgroups before becoming nspawn, so
        // hosts do not share one; setsid detaches nspawn from the test's terminal.
        let mut cmd = machine_cmd("setsid");
        cmd.arg("/bin/sh")
            .arg("-c")
            .arg(r#"for f in $RTH_CGROUP_PROCS; do echo $$ > "$f" || exit 97; done; exec "$@""#)
            .arg("sh")
            .arg("systemd-nspawn")
            .args(&args)
            .env("RTH_CGROUP_PROCS", procs.join(" "))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2);
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot start systemd-nspawn: {e}"))?;
        if let Ok(mut slot) = self.nspawn.lock() {
            *slot = Some(child);
        }
        Ok(())
    }

    /// Machine-side pid of systemd-nspawn (None once torn down).
    pub fn nspawn_pid(&self) -> Option<u32> {
        self.nspawn.lock().ok()?.as_ref().map(Child::id)
    }

    /// Some(reason) once nspawn has exited.
    fn nspawn_exited(&self) -> Option<String> {
        let mut guard = self.nspawn.lock().ok()?;
        let child = guard.as_mut()?;
        match child.try_wait() {
            Ok(Some(s)) => Some(format!("systemd-nspawn exited ({s})")),
            Ok(None) => None,
            Err(e) => Some(format!("cannot wait for systemd-nspawn: {e}")),
        }
    }

    fn boot_error(&self, what: &str) -> String {
        format!(
            "test host {}: {what}; last lines of systemd-nspawn's output:\n{}",
            self.name,
            self.log_tail(30)
        )
    }

    /// The leader is nspawn's child once it has become the container's systemd;
    /// before that the child is nspawn's own short-lived helper.
    fn wait_leader(&mut self, started: Instant, timeout: Duration) -> Result<(), String> {
        let pid = self
            .nspawn_pid()
            .ok_or_else(|| "systemd-nspawn not started".to_string())?;
        loop {
            if let Some(reason) = self.nspawn_exited() {
                return Err(self.boot_error(&reason));
            }
            if let Some(l) = children(pid).into_iter().find(|c| comm(*c) == "systemd") {
                self.leader = l;
                return Ok(());
            }
            if started.elapsed() > timeout {
                return Err(self.boot_error(&format!("no container init after {timeout:?}")));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn wait_running_until(&self, started: Instant, timeout: Duration) -> Result<(), String> {
        loop {
            if let Some(reason) = self.nspawn_exited() {
                return Err(self.boot_error(&reason));
            }
            let out =
                self.exec_timeout(&["systemctl", "is-system-running"], Duration::from_secs(10));
            let state = out.stdout.trim().to_string();
            if state == "running" || state == "degraded" {
                return Ok(());
            }
            if started.elapsed() > timeout {
                let last = format!("{state} {}", out.stderr.trim());
                return Err(self.boot_error(&format!(
                    "not running after {timeout:?} (systemctl is-system-running: {last})"
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until `systemctl is-system-running` says running or degraded (boot
    /// already did; useful after a test restarts things).
    pub fn wait_running(&self, timeout: Duration) -> Result<(), String> {
        self.wait_running_until(Instant::now(), timeout)
    }

    /// The systemd units that failed, e.g. to explain a `degraded` state.
    pub fn failed_units(&self) -> Vec<String> {
        let out = self.exec(&[
            "systemctl",
            "list-units",
            "--failed",
            "--plain",
            "--no-legend",
        ]);
        out.stdout
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .map(str::to_string)
            .collect()
    }

    fn nsenter(&self, argv: &[&str]) -> Command {
        let mut c = machine_cmd("nsenter");
        // -a: every namespace of the container's init, including mount (so its
        // root), pid and net. machinectl/systemd-run -M need machined, absent here.
        c.arg("-t")
            .arg(self.leader.to_string())
            .arg("-a")
            .arg("--")
            .args(argv)
            .env("HOME", "/root")
            .env("LANG", "C.UTF-8")
            .env_remove("LC_ALL")
            .env("TERM", "dumb");
        c
    }

    /// Runs argv inside the host (all its namespaces, as root), default timeout.
    pub fn exec(&self, argv: &[&str]) -> ExecOutput {
        self.exec_timeout(argv, DEFAULT_EXEC_TIMEOUT)
    }

    pub fn exec_timeout(&self, argv: &[&str], timeout: Duration) -> ExecOutput {
        if argv.is_empty() {
            return ExecOutput::failed("exec: empty argv".into());
        }
        run(self.nsenter(argv), Input::Null, timeout).text()
    }

    /// Runs argv inside with `input` on its stdin.
    pub fn exec_stdin(&self, argv: &[&str], input: &[u8]) -> ExecOutput {
        run(
            self.nsenter(argv),
            Input::Bytes(input.to_vec()),
            DEFAULT_EXEC_TIMEOUT,
        )
        .text()
    }

    /// `/bin/sh -c script` inside.
    pub fn sh(&self, script: &str) -> ExecOutput {
        self.exec(&["/bin/sh", "-c", script])
    }

    /// Like exec, but panics with the whole output unless it exits 0; returns stdout.
    pub fn exec_ok(&self, argv: &[&str]) -> String {
        let out = self.exec(argv);
        if !out.success() {
            panic!("{}: `{}` failed: {out}", self.name, argv.join(" "));
        }
        out.stdout
    }

    /// Like sh, but panics with the whole output unless it exits 0; returns stdout.
    pub fn sh_ok(&self, script: &str) -> String {
        let out = self.sh(script);
        if !out.success() {
            panic!("{}: `{script}` failed: {out}", self.name);
        }
        out.stdout
    }

    /// Writes a file inside (parents created, mode from umask 022, owner root).
    /// Goes through the container's own sh/cat, never the machine's view of its
    /// root, so an absolute symlink inside cannot redirect the write to the machine.
    /// Panics on failure: it is test setup.
    pub fn write_file(&self, path: &str, content: &[u8]) {
        let out = run(
            self.nsenter(&[
                "/bin/sh",
                "-c",
                r#"mkdir -p -- "$(dirname -- "$1")" && cat > "$1""#,
                "sh",
                path,
            ]),
            Input::Bytes(content.to_vec()),
            DEFAULT_EXEC_TIMEOUT,
        )
        .text();
        if !out.success() {
            panic!("{}: write_file({path}) failed: {out}", self.name);
        }
    }

    /// A file's bytes inside, or None when it cannot be read.
    pub fn read_file(&self, path: &str) -> Option<Vec<u8>> {
        let out = run(
            self.nsenter(&["cat", "--", path]),
            Input::Null,
            DEFAULT_EXEC_TIMEOUT,
        );
        (out.status == 0).then_some(out.stdout)
    }

    /// Copies a machine file or directory tree to `path` inside: `path` becomes
    /// the copy (for a directory, its contents land in `path`, created if needed).
    /// Modes are kept, everything is owned by root. Panics on failure.
    pub fn copy_in(&self, local: &Path, path: &str) {
        let meta = fs::metadata(local)
            .unwrap_or_else(|e| panic!("copy_in: cannot stat {}: {e}", local.display()));
        if meta.is_file() {
            let data = fs::read(local)
                .unwrap_or_else(|e| panic!("copy_in: cannot read {}: {e}", local.display()));
            self.write_file(path, &data);
            use std::os::unix::fs::PermissionsExt;
            let mode = format!("{:o}", meta.permissions().mode() & 0o7777);
            self.exec_ok(&["chmod", &mode, "--", path]);
            return;
        }
        let mut tar = machine_cmd("tar");
        tar.arg("-C")
            .arg(local)
            .args(["-cf", "-", "."])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut producer = tar
            .spawn()
            .unwrap_or_else(|e| panic!("copy_in: cannot start tar: {e}"));
        let Some(pipe) = producer.stdout.take() else {
            panic!("copy_in: tar has no stdout");
        };
        let script = format!(
            "mkdir -p -- {p} && tar -C {p} --no-same-owner -xf -",
            p = sh_quote(path)
        );
        let out = run(
            self.nsenter(&["/bin/sh", "-c", &script]),
            Input::Stdio(Stdio::from(pipe)),
            DEFAULT_EXEC_TIMEOUT,
        )
        .text();
        let tar_err = producer.stderr.take().map(read_all);
        let tar_status = wait_timeout(&mut producer, Duration::from_secs(30));
        let tar_err = tar_err
            .and_then(|h| h.join().ok())
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        if tar_status.map(|s| s.success()) != Some(true) {
            let _ = producer.kill();
            let _ = producer.wait();
            panic!("copy_in: tar of {} failed: {tar_err}", local.display());
        }
        if !out.success() {
            panic!(
                "{}: copy_in({}, {path}) failed: {out}",
                self.name,
                local.display()
            );
        }
    }

    fn kill_cgroups(&self) {
        kill_cgroup_procs(&self.cgroups);
    }

    /// Best-effort teardown, in the order that lets each step succeed.
    fn shutdown(&mut self) {
        let child = self.nspawn.get_mut().ok().and_then(Option::take);
        if let Some(mut child) = child {
            if matches!(child.try_wait(), Ok(None)) {
                if self.leader != 0 && pid_alive(self.leader) {
                    let _ = self.exec_timeout(
                        &["systemctl", "poweroff", "--no-block"],
                        Duration::from_secs(10),
                    );
                } else {
                    // Boot abandoned before init was up: nspawn turns SIGTERM into
                    // an orderly shutdown of whatever it started.
                    let _ = machine("kill", &["-TERM", &child.id().to_string()]);
                }
                if wait_timeout(&mut child, self.shutdown_timeout).is_none() {
                    // Killing the container's init first ends its pid namespace and
                    // lets nspawn reap it (PID 1 of the machine may not reap
                    // orphans). Then whatever is left in our cgroups, nspawn too.
                    for pid in children(child.id()) {
                        let _ = machine("kill", &["-KILL", &pid.to_string()]);
                    }
                    if wait_timeout(&mut child, Duration::from_secs(5)).is_none() {
                        self.kill_cgroups();
                    }
                    if wait_timeout(&mut child, Duration::from_secs(5)).is_none() {
                        let _ = child.kill();
                        let _ = child.wait();
                    }
                }
            }
        }
        // Processes exec'd with nsenter die with the pid namespace; anything else
        // left in the cgroups would keep them from being removed.
        self.kill_cgroups();
        if self.netns_made {
            if let (Some(net), Some(_)) = (&self.net, &self.ip) {
                net.detach(&self.netns);
            }
            let _ = machine("ip", &["netns", "del", &self.netns]);
            self.netns_made = false;
        }
        for dir in self.cgroups.drain(..) {
            remove_cgroup(&dir);
        }
        // nspawn cannot clean this itself because /run is not a tmpfs here.
        let propagate = Path::new("/run/systemd/nspawn/propagate").join(&self.name);
        if propagate.exists() && !is_mount_point(&propagate) {
            let _ = fs::remove_dir_all(&propagate);
        }
    }
}

impl Drop for TestHost {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn random_uuid() -> Result<String, String> {
    fs::read_to_string("/proc/sys/kernel/random/uuid")
        .map(|s| s.trim().to_string())
        .map_err(|e| format!("cannot read a uuid: {e}"))
}

/// A private network for hosts that must talk to each other or to a controller:
/// a bridge in its own controller namespace, one veth pair per host, addresses
/// from 10.231.1.0/24. The /24 is reused by every TestNet, safely, because each
/// lives in its own namespaces. Dropped after its last host.
#[derive(Debug, Clone)]
pub struct TestNet {
    inner: Arc<NetInner>,
}

#[derive(Debug)]
struct NetInner {
    ctl: String,
    next: Mutex<u8>,
}

pub const TESTNET_PREFIX: &str = "10.231.1";
pub const TESTNET_CONTROLLER_IP: &str = "10.231.1.1";
const TESTNET_BRIDGE: &str = "br0";

impl TestNet {
    pub fn new() -> Result<TestNet, String> {
        available()?;
        let ctl = unique_name("rtn");
        if Path::new("/run/netns").join(&ctl).exists() {
            let _ = machine("ip", &["netns", "del", &ctl]);
        }
        machine("ip", &["netns", "add", &ctl])?;
        let net = TestNet {
            inner: Arc::new(NetInner {
                ctl: ctl.clone(),
                next: Mutex::new(11),
            }),
        };
        let cidr = format!("{TESTNET_CONTROLLER_IP}/24");
        machine("ip", &["-n", &ctl, "link", "set", "lo", "up"])?;
        machine(
            "ip",
            &["-n", &ctl, "link", "add", TESTNET_BRIDGE, "type", "bridge"],
        )?;
        machine(
            "ip",
            &["-n", &ctl, "addr", "add", &cidr, "dev", TESTNET_BRIDGE],
        )?;
        machine("ip", &["-n", &ctl, "link", "set", TESTNET_BRIDGE, "up"])?;
        Ok(net)
    }

    /// The controller's network namespace (for `ip netns exec NAME ...`).
    pub fn controller_netns(&self) -> &str {
        &self.inner.ctl
    }

    pub fn controller_ip(&self) -> &str {
        TESTNET_CONTROLLER_IP
    }

    /// Runs a machine-side command inside the controller namespace only (the
    /// machine's filesystem, the controller's network), e.g. ssh to a host.
    pub fn exec(&self, argv: &[&str]) -> ExecOutput {
        let mut c = machine_cmd("ip");
        c.args(["netns", "exec", &self.inner.ctl]).args(argv);
        run(c, Input::Null, DEFAULT_EXEC_TIMEOUT).text()
    }

    /// Creates the veth pair for a host namespace; returns the host's address.
    fn attach(&self, netns: &str) -> Result<String, String> {
        let n = {
            let mut next = self
                .inner
                .next
                .lock()
                .map_err(|_| "TestNet lock poisoned".to_string())?;
            if *next == 254 {
                return Err("TestNet is full".into());
            }
            let n = *next;
            *next += 1;
            n
        };
        let ctl = &self.inner.ctl;
        let port = format!("vh{n}");
        let addr = format!("{TESTNET_PREFIX}.{n}");
        machine(
            "ip",
            &[
                "-n", ctl, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns",
                netns,
            ],
        )?;
        machine(
            "ip",
            &[
                "-n",
                ctl,
                "link",
                "set",
                &port,
                "master",
                TESTNET_BRIDGE,
                "up",
            ],
        )?;
        machine(
            "ip",
            &[
                "-n",
                netns,
                "addr",
                "add",
                &format!("{addr}/24"),
                "dev",
                "eth0",
            ],
        )?;
        machine("ip", &["-n", netns, "link", "set", "eth0", "up"])?;
        Ok(addr)
    }

    /// Deleting the host's end (with its namespace) takes the pair down; this only
    /// makes sure no port lingers on the bridge if the namespace outlives us.
    fn detach(&self, netns: &str) {
        let _ = machine("ip", &["-n", netns, "link", "del", "eth0"]);
    }
}

impl Drop for NetInner {
    fn drop(&mut self) {
        let _ = machine("ip", &["netns", "del", &self.ctl]);
    }
}
