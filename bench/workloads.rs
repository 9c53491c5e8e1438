//! Benchmark harness: generates workloads into temporary roots, runs the real release
//! `reconcile` binary on them, and prints a markdown table of median wall time, time
//! per resource, ratio to the filesystem floor, and peak RSS.
//!
//! `cargo bench --bench workloads -- [--quick] [--max-n N] [--runs K] [--only NAME]`
//!
//! It is a plain binary (no criterion): the thing measured is a separate process, so
//! what matters is wall time of the whole command, not nanosecond loops, and a heavy
//! bench framework would double the build time on a 2-core machine.
//!
//! Peak RSS is read by running the command once more under GNU time (`/usr/bin/time
//! -f %M`), so the timed runs are not slowed by a wrapper; without GNU time it falls
//! back to sampling `/proc/PID/status` VmHWM every millisecond (a lower bound, shown
//! with `~`).

use std::fmt::Write as _;
use std::io::Read as _;
use std::os::unix::fs::MetadataExt as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

const BIN: &str = env!("CARGO_BIN_EXE_reconcile");

/// `--reconcile PATH`: measure another build (e.g. a saved baseline) instead of BIN.
static RECONCILE: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

fn reconcile_bin() -> &'static Path {
    RECONCILE.get_or_init(|| PathBuf::from(BIN))
}

/// Files per directory in generated trees: many real config trees are wide and shallow.
const PER_DIR: usize = 100;
/// Distinct templates the files cycle through (templates render once each per run).
const TEMPLATES: usize = 16;
/// Resources per manifest file: big sites split manifests, and it keeps files sane.
const PER_MANIFEST: usize = 1000;
const SVC_UID: u32 = 1000;
const SVC_GID: u32 = 1000;
const HOSTNAME: &str = "benchhost";

struct Opts {
    quick: bool,
    max_n: usize,
    runs: Option<usize>,
    only: Option<String>,
    jobs: Option<usize>,
    /// `--generate N`: write a populated N-file workload, print its paths, keep it.
    generate: Option<usize>,
    /// Largest N for the converge workload (it fsyncs every file: ~minutes at 100k).
    converge_max_n: usize,
    /// `--floor-child LIST`: internal, the floor as its own process.
    floor_child: Option<PathBuf>,
    /// `--dpkg-floor-child STATUS`: internal, read and parse a dpkg status file.
    dpkg_floor_child: Option<PathBuf>,
}

fn parse_args() -> Res<Opts> {
    let mut o = Opts {
        quick: false,
        max_n: 100_000,
        runs: None,
        only: None,
        jobs: None,
        generate: None,
        converge_max_n: usize::MAX,
        floor_child: None,
        dpkg_floor_child: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = |name: &str| -> Res<String> {
            args.next()
                .ok_or_else(|| format!("{name} needs a value").into())
        };
        match a.as_str() {
            "--quick" => o.quick = true,
            "--max-n" => o.max_n = value("--max-n")?.parse()?,
            "--runs" => o.runs = Some(value("--runs")?.parse()?),
            "--only" => o.only = Some(value("--only")?),
            "-j" | "--jobs" => o.jobs = Some(value("--jobs")?.parse()?),
            "--generate" => o.generate = Some(value("--generate")?.parse()?),
            "--reconcile" => {
                let _ = RECONCILE.set(PathBuf::from(value("--reconcile")?));
            }
            "--converge-max-n" => o.converge_max_n = value("--converge-max-n")?.parse()?,
            "--floor-child" => o.floor_child = Some(PathBuf::from(value("--floor-child")?)),
            "--dpkg-floor-child" => {
                o.dpkg_floor_child = Some(PathBuf::from(value("--dpkg-floor-child")?))
            }
            // cargo bench passes --bench; libtest-style filters are ignored.
            "--bench" => {}
            "-h" | "--help" => {
                println!(
                    "usage: workloads [--quick] [--max-n N] [--runs K] [--only noop|converge|drift|mixed|validate|packages] [-j N] [--converge-max-n N] [--reconcile PATH] | --generate N"
                );
                std::process::exit(0);
            }
            other if other.starts_with('-') => return Err(format!("unknown flag {other}").into()),
            _ => {}
        }
    }
    Ok(o)
}

// ---------------------------------------------------------------------------------
// Workload generation

/// A generated target root and its manifests, removed on drop.
struct Workload {
    tmp: tempfile::TempDir,
    root: PathBuf,
    manifests: PathBuf,
    /// Manifest paths of the managed files, in declaration order.
    files: Vec<String>,
}

fn template_text(k: usize) -> String {
    let mut t = format!(
        "# managed by reconcile: bench template {k}\napp = {{{{ app }}}}\nhost = {{{{ host.hostname }}}}\nuser = {{{{ svc_user }}}}\n"
    );
    // Filler so files are a realistic few hundred bytes.
    for line in 0..8 {
        let _ = writeln!(t, "option_{k}_{line} = value {line} of template {k}");
    }
    t
}

/// What `template_text(k)` renders to with the bench vars (the harness populates trees
/// directly, so it must agree with Tera; `check` exiting 0 proves it does).
fn rendered(k: usize) -> String {
    template_text(k)
        .replace("{{ app }}", "bench")
        .replace("{{ host.hostname }}", HOSTNAME)
        .replace("{{ svc_user }}", "svc")
}

fn file_path(i: usize) -> String {
    format!("/srv/bench/d{:04}/f{:06}.conf", i / PER_DIR, i)
}

fn write_base_root(root: &Path) -> Res<()> {
    std::fs::create_dir_all(root.join("etc"))?;
    std::fs::write(
        root.join("etc/passwd"),
        format!(
            "root:x:0:0:root:/root:/bin/sh\nsvc:x:{SVC_UID}:{SVC_GID}:svc:/home/svc:/usr/sbin/nologin\n"
        ),
    )?;
    std::fs::write(
        root.join("etc/group"),
        format!("root:x:0:\nsvc:x:{SVC_GID}:\n"),
    )?;
    std::fs::write(root.join("etc/hostname"), format!("{HOSTNAME}\n"))?;
    std::fs::write(
        root.join("etc/os-release"),
        "ID=debian\nVERSION_ID=\"12\"\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n",
    )?;
    Ok(())
}

fn file_entry(out: &mut String, i: usize) {
    let _ = write!(
        out,
        "  - file: /srv/{{{{ app }}}}/d{:04}/f{:06}.conf\n    template: t{:02}.conf.tera\n    owner: \"{{{{ svc_user }}}}\"\n    group: \"{{{{ svc_group }}}}\"\n    mode: \"{{{{ conf_mode }}}}\"\n",
        i / PER_DIR,
        i,
        i % TEMPLATES
    );
}

struct Extra {
    dirs: usize,
    users: usize,
    units: usize,
}

/// Writes manifests for `n` templated files (plus `extra` kinds) and an empty root.
fn generate(n: usize, extra: &Extra) -> Res<Workload> {
    let tmp = tempfile::Builder::new()
        .prefix("reconcile-bench-")
        .tempdir()?;
    let root = tmp.path().join("root");
    let manifests = tmp.path().join("manifests");
    let templates = manifests.join("templates");
    std::fs::create_dir_all(&templates)?;
    write_base_root(&root)?;
    for k in 0..TEMPLATES {
        std::fs::write(
            templates.join(format!("t{k:02}.conf.tera")),
            template_text(k),
        )?;
    }
    std::fs::write(
        manifests.join("00-vars.yaml"),
        "vars:\n  app: bench\n  svc_user: svc\n  svc_group: svc\n  conf_mode: \"0640\"\n",
    )?;
    let mut files = Vec::with_capacity(n);
    let mut chunk = String::new();
    let mut part = 0;
    let flush = |chunk: &mut String, part: &mut usize| -> Res<()> {
        if !chunk.is_empty() {
            let body = format!("resources:\n{chunk}");
            std::fs::write(manifests.join(format!("{:04}-files.yaml", *part + 1)), body)?;
            chunk.clear();
            *part += 1;
        }
        Ok(())
    };
    for i in 0..n {
        file_entry(&mut chunk, i);
        files.push(file_path(i));
        if (i + 1) % PER_MANIFEST == 0 {
            flush(&mut chunk, &mut part)?;
        }
    }
    flush(&mut chunk, &mut part)?;
    let mut other = String::new();
    for d in 0..extra.dirs {
        let _ = write!(
            other,
            "  - directory: /srv/extra/dir{d:03}\n    owner: \"{{{{ svc_user }}}}\"\n    group: \"{{{{ svc_group }}}}\"\n    mode: \"0750\"\n"
        );
    }
    for u in 0..extra.users {
        let _ = write!(
            other,
            "  - group: benchg{u:02}\n    gid: {gid}\n  - user: benchu{u:02}\n    uid: {gid}\n    group: benchg{u:02}\n    home: /home/benchu{u:02}\n    shell: /usr/sbin/nologin\n",
            gid = 2000 + u
        );
    }
    for s in 0..extra.units {
        let _ = write!(
            other,
            "  - unit: bench{s:02}.service\n    content: |\n      [Unit]\n      Description=bench {s}\n      [Service]\n      ExecStart=/bin/true\n      [Install]\n      WantedBy=multi-user.target\n    enabled: true\n"
        );
    }
    if !other.is_empty() {
        std::fs::write(
            manifests.join("9999-extra.yaml"),
            format!("resources:\n{other}"),
        )?;
    }
    Ok(Workload {
        tmp,
        root,
        manifests,
        files,
    })
}

/// Creates the converged tree directly (fast, no fsync): for the no-op and drift runs.
fn populate(w: &Workload) -> Res<()> {
    let contents: Vec<String> = (0..TEMPLATES).map(rendered).collect();
    for (i, p) in w.files.iter().enumerate() {
        let real = w.root.join(p.trim_start_matches('/'));
        if i % PER_DIR == 0 {
            if let Some(dir) = real.parent() {
                std::fs::create_dir_all(dir)?;
            }
        }
        std::fs::write(&real, &contents[i % TEMPLATES])?;
        std::os::unix::fs::chown(&real, Some(SVC_UID), Some(SVC_GID))?;
        std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o640))?;
    }
    Ok(())
}

/// Empties the root back to its base (etc/ only), for repeated converge runs.
fn reset_root(w: &Workload) -> Res<()> {
    for entry in std::fs::read_dir(&w.root)? {
        let entry = entry?;
        if entry.file_name() != "etc" {
            let p = entry.path();
            if entry.file_type()?.is_dir() {
                std::fs::remove_dir_all(&p)?;
            } else {
                std::fs::remove_file(&p)?;
            }
        }
    }
    write_base_root(&w.root)
}

// ---------------------------------------------------------------------------------
// Measuring

fn reconcile(cmd: &str, w: &Workload, jobs: Option<usize>) -> Command {
    let mut c = Command::new(reconcile_bin());
    c.arg(cmd).arg("-q").arg("--root").arg(&w.root);
    if let Some(j) = jobs {
        c.arg("-j").arg(j.to_string());
    }
    c.arg(&w.manifests);
    c.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    c
}

/// Runs once, returning wall time and exit status; stderr kept for error messages.
fn run_timed(mut c: Command) -> Res<(Duration, ExitStatus, String)> {
    let start = Instant::now();
    let mut child = c.spawn()?;
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        e.read_to_string(&mut err)?;
    }
    let status = child.wait()?;
    Ok((start.elapsed(), status, err))
}

fn expect_code(what: &str, status: ExitStatus, want: i32, err: &str) -> Res<()> {
    if status.code() == Some(want) {
        Ok(())
    } else {
        let tail: String = err.lines().take(15).collect::<Vec<_>>().join("\n");
        Err(format!("{what}: exit {:?}, expected {want}\n{tail}", status.code()).into())
    }
}

/// Peak RSS in KiB of one more run of the command.
enum Rss {
    Exact(u64),
    Sampled(u64),
    Unknown,
}

fn gnu_time() -> Option<PathBuf> {
    let p = PathBuf::from("/usr/bin/time");
    let ok = Command::new(&p)
        .args(["-f", "%M", "true"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    ok.then_some(p)
}

fn measure_rss(c: &Command) -> Res<Rss> {
    if let Some(time) = gnu_time() {
        let out = tempfile::NamedTempFile::new()?;
        let mut wrapped = Command::new(time);
        wrapped.arg("-f").arg("%M").arg("-o").arg(out.path());
        wrapped.arg(c.get_program()).args(c.get_args());
        wrapped
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        wrapped.status()?;
        let text = std::fs::read_to_string(out.path())?;
        // GNU time prints "Command exited with non-zero status N" first when it did.
        let kb = text.lines().last().and_then(|l| l.trim().parse().ok());
        return Ok(kb.map_or(Rss::Unknown, Rss::Exact));
    }
    let mut child = Command::new(c.get_program())
        .args(c.get_args())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let status_path = format!("/proc/{}/status", child.id());
    let mut peak = 0;
    loop {
        if let Ok(text) = std::fs::read_to_string(&status_path) {
            for line in text.lines() {
                if let Some(v) = line.strip_prefix("VmHWM:") {
                    let kb = v.trim().trim_end_matches("kB").trim().parse().unwrap_or(0);
                    peak = peak.max(kb);
                }
            }
        }
        if child.try_wait()?.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(if peak > 0 {
        Rss::Sampled(peak)
    } else {
        Rss::Unknown
    })
}

/// One run under GNU time: wall time, exit status and peak RSS together.
fn run_with_rss(c: &Command) -> Res<(Duration, ExitStatus, Rss)> {
    let mut cmd = match gnu_time() {
        Some(time) => {
            let mut wrapped = Command::new(time);
            wrapped.arg("-f").arg("%M").arg("-o");
            wrapped
        }
        None => Command::new(c.get_program()),
    };
    let out = tempfile::NamedTempFile::new()?;
    let timed = cmd.get_program() != c.get_program();
    if timed {
        cmd.arg(out.path()).arg(c.get_program());
    }
    cmd.args(c.get_args());
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let (d, st, err) = run_timed(cmd)?;
    if !st.success() {
        eprintln!("{err}");
    }
    let text = std::fs::read_to_string(out.path())?;
    let kb = text.lines().last().and_then(|l| l.trim().parse().ok());
    Ok((d, st, kb.filter(|_| timed).map_or(Rss::Unknown, Rss::Exact)))
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

/// The floor: lstat and SHA-256 every managed file, in one thread, in-process.
fn floor_once(w: &Workload) -> Res<Duration> {
    let start = Instant::now();
    let mut buf = Vec::new();
    let mut acc = 0u8;
    for p in &w.files {
        let real = w.root.join(p.trim_start_matches('/'));
        let md = std::fs::symlink_metadata(&real)?;
        buf.clear();
        std::fs::File::open(&real)?.read_to_end(&mut buf)?;
        let digest = Sha256::digest(&buf);
        acc ^= digest[0] ^ (md.mode() as u8);
    }
    std::hint::black_box(acc);
    Ok(start.elapsed())
}

/// The floor as a minimal program of its own (process start included, as for
/// reconcile): lstat and hash every path listed in `list`, one per line.
fn floor_child(list: &Path) -> Res<()> {
    let text = std::fs::read_to_string(list)?;
    let mut buf = Vec::new();
    let mut acc = 0u8;
    for p in text.lines() {
        let md = std::fs::symlink_metadata(p)?;
        buf.clear();
        std::fs::File::open(p)?.read_to_end(&mut buf)?;
        acc ^= Sha256::digest(&buf)[0] ^ (md.mode() as u8);
    }
    std::hint::black_box(acc);
    Ok(())
}

fn floor_process_once(list: &Path) -> Res<Duration> {
    let mut c = Command::new(std::env::current_exe()?);
    c.arg("--floor-child").arg(list);
    let (d, st, err) = run_timed(c)?;
    expect_code("floor program", st, 0, &err)?;
    Ok(d)
}

/// `find ROOT/srv -type f -exec sha256sum {} +` as a second, shell-level floor.
fn find_floor_once(w: &Workload) -> Res<Option<Duration>> {
    let mut c = Command::new("find");
    c.arg(w.root.join("srv/bench"))
        .args(["-type", "f", "-exec", "sha256sum", "{}", "+"])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let start = Instant::now();
    match c.status() {
        Ok(s) if s.success() => Ok(Some(start.elapsed())),
        _ => Ok(None),
    }
}

struct Row {
    workload: String,
    n: usize,
    runs: usize,
    wall: Duration,
    floor: Option<Duration>,
    rss: Rss,
    note: String,
}

fn fmt_dur(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s >= 10.0 {
        format!("{s:.1} s")
    } else if s >= 1.0 {
        format!("{s:.2} s")
    } else {
        format!("{:.1} ms", s * 1e3)
    }
}

fn fmt_per(d: Duration, n: usize) -> String {
    let us = d.as_secs_f64() * 1e6 / n.max(1) as f64;
    if us >= 1000.0 {
        format!("{:.2} ms", us / 1e3)
    } else {
        format!("{us:.1} µs")
    }
}

fn fmt_rss(r: &Rss) -> String {
    match r {
        Rss::Exact(kb) => format!("{:.1} MB", *kb as f64 / 1024.0),
        Rss::Sampled(kb) => format!("~{:.1} MB", *kb as f64 / 1024.0),
        Rss::Unknown => "?".into(),
    }
}

fn print_row(r: &Row) {
    let ratio = r
        .floor
        .map(|f| format!("{:.2}×", r.wall.as_secs_f64() / f.as_secs_f64().max(1e-9)))
        .unwrap_or_else(|| "–".into());
    let floor = r.floor.map(fmt_dur).unwrap_or_else(|| "–".into());
    println!(
        "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
        r.workload,
        r.n,
        r.runs,
        fmt_dur(r.wall),
        fmt_per(r.wall, r.n),
        floor,
        ratio,
        fmt_rss(&r.rss),
        r.note
    );
}

fn header() {
    println!(
        "| workload | resources | runs | wall (median) | per resource | floor (median) | × floor | peak RSS | notes |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---|");
}

fn runs_for(o: &Opts, n: usize, base: usize) -> usize {
    if o.quick {
        return 1;
    }
    o.runs.unwrap_or(if n >= 100_000 {
        3.min(base)
    } else if n >= 10_000 {
        5.min(base)
    } else {
        base
    })
}

fn wants(o: &Opts, name: &str) -> bool {
    o.only.as_deref().is_none_or(|w| w == name)
}

const NO_EXTRA: Extra = Extra {
    dirs: 0,
    users: 0,
    units: 0,
};

/// Workloads 1 and 3 (they share a populated tree).
fn noop_and_drift(o: &Opts, n: usize, rows: &mut Vec<Row>) -> Res<()> {
    let w = generate(n, &NO_EXTRA)?;
    populate(&w)?;
    // Warm-up: proves the populated tree is what the manifests say (exit 0), and warms
    // the page cache for reconcile and the floor alike.
    let (_, st, err) = run_timed(reconcile("check", &w, o.jobs))?;
    expect_code("check on the populated tree", st, 0, &err)?;
    floor_once(&w)?;
    let runs = runs_for(o, n, 9);
    if wants(o, "noop") {
        let list = w.tmp.path().join("paths.txt");
        let mut listing = String::new();
        for p in &w.files {
            let _ = writeln!(
                listing,
                "{}",
                w.root.join(p.trim_start_matches('/')).display()
            );
        }
        std::fs::write(&list, listing)?;
        let mut walls = Vec::new();
        let mut floors = Vec::new();
        let mut loops = Vec::new();
        let mut finds = Vec::new();
        // Interleaved so that background load hits all of them alike.
        for _ in 0..runs {
            let (d, st, err) = run_timed(reconcile("check", &w, o.jobs))?;
            expect_code("no-op check", st, 0, &err)?;
            walls.push(d);
            floors.push(floor_process_once(&list)?);
            loops.push(floor_once(&w)?);
            if let Some(f) = find_floor_once(&w)? {
                finds.push(f);
            }
        }
        let rss = measure_rss(&reconcile("check", &w, o.jobs))?;
        let floor = median(floors);
        let wall = median(walls);
        let ratio = |d: Duration| wall.as_secs_f64() / d.as_secs_f64().max(1e-9);
        let in_process = median(loops);
        let mut note = format!(
            "in-process loop {} ({:.1}×)",
            fmt_dur(in_process),
            ratio(in_process)
        );
        if !finds.is_empty() {
            let f = median(finds);
            let _ = write!(note, "; find+sha256sum {} ({:.1}×)", fmt_dur(f), ratio(f));
        }
        rows.push(Row {
            workload: "no-op check".into(),
            n,
            runs,
            wall,
            floor: Some(floor),
            rss,
            note,
        });
        print_row(rows.last().ok_or("no row")?);
    }
    if wants(o, "drift") {
        let victim = w.root.join(w.files[n / 2].trim_start_matches('/'));
        std::fs::write(&victim, "drifted\n")?;
        let mut walls = Vec::new();
        for _ in 0..runs {
            let (d, st, err) = run_timed(reconcile("check", &w, o.jobs))?;
            expect_code("check with one drifted file", st, 2, &err)?;
            walls.push(d);
        }
        let rss = measure_rss(&reconcile("check", &w, o.jobs))?;
        rows.push(Row {
            workload: "drift (1 file) check".into(),
            n,
            runs,
            wall: median(walls),
            floor: None,
            rss,
            note: "exit 2".into(),
        });
        print_row(rows.last().ok_or("no row")?);
    }
    Ok(())
}

/// Workload 2: apply from an empty root (atomic writes with fsync), then a no-op check.
fn converge(o: &Opts, n: usize, rows: &mut Vec<Row>) -> Res<()> {
    let w = generate(n, &NO_EXTRA)?;
    let runs = runs_for(o, n, 3).min(if n >= 10_000 { 1 } else { 3 });
    let mut walls = Vec::new();
    let mut rss = Rss::Unknown;
    // Each run is slow (fsync) and one-shot, so it is timed under GNU time itself (~1 ms
    // of overhead) rather than repeated once more for the peak RSS.
    for run in 0..runs {
        if run > 0 {
            reset_root(&w)?;
        }
        let (d, st, r) = run_with_rss(&reconcile("apply", &w, o.jobs))?;
        expect_code("converge", st, 0, "")?;
        walls.push(d);
        rss = r;
    }
    let (_, st, err) = run_timed(reconcile("check", &w, o.jobs))?;
    expect_code("check after converge", st, 0, &err)?;
    rows.push(Row {
        workload: "converge from empty".into(),
        n,
        runs,
        wall: median(walls),
        floor: None,
        rss,
        note: "fsync per file and dir".into(),
    });
    print_row(rows.last().ok_or("no row")?);
    Ok(())
}

/// Workload 4: files, directories, users/groups and units together, offline.
fn mixed(o: &Opts, rows: &mut Vec<Row>) -> Res<()> {
    let n_files = if o.quick { 100 } else { 1000 };
    let full = Extra {
        dirs: 100,
        users: 50,
        units: 20,
    };
    let mut w = generate(n_files, &full)?;
    let (_, st, _) = run_timed(reconcile("validate", &w, o.jobs))?;
    let mut note = "files, dirs, users, groups, units (offline)".to_string();
    let mut extra_n = full.dirs + 2 * full.users + full.units;
    if !st.success() {
        w = generate(
            n_files,
            &Extra {
                dirs: 100,
                users: 0,
                units: 0,
            },
        )?;
        note = "files and dirs only: user/group/unit were rejected by validate".into();
        extra_n = 100;
    }
    let n = n_files + extra_n;
    let runs = runs_for(o, n, 5);
    let (d, st, err) = run_timed(reconcile("apply", &w, o.jobs))?;
    let converge_rss = match measure_rss_after(&w, o) {
        Ok(r) => r,
        Err(_) => Rss::Unknown,
    };
    if !st.success() {
        let first = err.lines().next().unwrap_or("").to_string();
        rows.push(Row {
            workload: "mixed converge".into(),
            n,
            runs: 1,
            wall: d,
            floor: None,
            rss: Rss::Unknown,
            note: format!("FAILED (exit {:?}): {first}", st.code()),
        });
        print_row(rows.last().ok_or("no row")?);
        return Ok(());
    }
    rows.push(Row {
        workload: "mixed converge".into(),
        n,
        runs: 1,
        wall: d,
        floor: None,
        rss: converge_rss,
        note: note.clone(),
    });
    print_row(rows.last().ok_or("no row")?);
    let mut walls = Vec::new();
    for _ in 0..runs {
        let (d, st, err) = run_timed(reconcile("check", &w, o.jobs))?;
        expect_code("mixed no-op check", st, 0, &err)?;
        walls.push(d);
    }
    let rss = measure_rss(&reconcile("check", &w, o.jobs))?;
    rows.push(Row {
        workload: "mixed no-op check".into(),
        n,
        runs,
        wall: median(walls),
        floor: None,
        rss,
        note,
    });
    print_row(rows.last().ok_or("no row")?);
    Ok(())
}

/// Peak RSS of a mixed converge: on a copy of the manifests into a fresh root, so the
/// timed run above stays the first one.
fn measure_rss_after(w: &Workload, o: &Opts) -> Res<Rss> {
    let fresh = tempfile::Builder::new()
        .prefix("reconcile-bench-")
        .tempdir()?;
    let root = fresh.path().join("root");
    write_base_root(&root)?;
    let mut c = Command::new(reconcile_bin());
    c.arg("apply").arg("-q").arg("--root").arg(&root);
    if let Some(j) = o.jobs {
        c.arg("-j").arg(j.to_string());
    }
    c.arg(&w.manifests);
    let (_, _, rss) = run_with_rss(&c)?;
    Ok(rss)
}

/// Workload 5: load, template, decode and build the graph, no observation.
fn validate(o: &Opts, n: usize, rows: &mut Vec<Row>) -> Res<()> {
    let w = generate(n, &NO_EXTRA)?;
    let runs = runs_for(o, n, 5);
    let mut walls = Vec::new();
    for _ in 0..runs {
        let (d, st, err) = run_timed(reconcile("validate", &w, o.jobs))?;
        expect_code("validate", st, 0, &err)?;
        walls.push(d);
    }
    let rss = measure_rss(&reconcile("validate", &w, o.jobs))?;
    rows.push(Row {
        workload: "validate + graph".into(),
        n,
        runs,
        wall: median(walls),
        floor: None,
        rss,
        note: String::new(),
    });
    print_row(rows.last().ok_or("no row")?);
    Ok(())
}

/// Package resources in the no-op check: the figure.
const PACKAGES: usize = 50;

/// A no-op `check` of [`PACKAGES`] package resources (a third with their installed
/// `version:`) on a copy of this machine's dpkg database, against the floor: a
/// minimal process that reads and parses the same status file. Nothing is spawned
/// by reconcile for packages in place, so the difference is its own start-up.
fn packages(o: &Opts, rows: &mut Vec<Row>) -> Res<()> {
    let Ok(status) = std::fs::read("/var/lib/dpkg/status") else {
        println!("| no-op check, packages | – | – | – | – | – | – | – | no dpkg database here |");
        return Ok(());
    };
    let tmp = tempfile::tempdir()?;
    let root = tmp.path().join("root");
    let manifests = tmp.path().join("manifests");
    std::fs::create_dir_all(root.join("var/lib/dpkg"))?;
    std::fs::create_dir_all(root.join("etc"))?;
    std::fs::create_dir_all(&manifests)?;
    std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n")?;
    std::fs::write(root.join("etc/group"), "root:x:0:\n")?;
    let status_path = root.join("var/lib/dpkg/status");
    std::fs::write(&status_path, &status)?;
    let text = String::from_utf8_lossy(&status);
    let mut manifest = String::from("resources:\n");
    let mut count = 0;
    for stanza in text.split("\n\n") {
        let field = |k: &str| {
            stanza
                .lines()
                .find_map(|l| l.strip_prefix(k))
                .map(|v| v.trim().to_string())
        };
        if field("Status:").as_deref() != Some("install ok installed") {
            continue;
        }
        let (Some(name), Some(version)) = (field("Package:"), field("Version:")) else {
            continue;
        };
        let _ = writeln!(manifest, "  - package: {name}");
        if count % 3 == 0 {
            let _ = writeln!(manifest, "    version: \"{version}\"");
        }
        count += 1;
        if count == PACKAGES {
            break;
        }
    }
    std::fs::write(manifests.join("site.yaml"), manifest)?;
    let w = Workload {
        tmp,
        root,
        manifests,
        files: Vec::new(),
    };
    let runs = if o.quick { 3 } else { o.runs.unwrap_or(21) };
    let mut walls = Vec::new();
    let mut floors = Vec::new();
    for _ in 0..runs {
        let (d, st, err) = run_timed(reconcile("check", &w, o.jobs))?;
        expect_code("package no-op check", st, 0, &err)?;
        walls.push(d);
        let mut c = Command::new(std::env::current_exe()?);
        c.arg("--dpkg-floor-child").arg(&status_path);
        c.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let (d, st, err) = run_timed(c)?;
        expect_code("dpkg floor program", st, 0, &err)?;
        floors.push(d);
    }
    let rss = measure_rss(&reconcile("check", &w, o.jobs))?;
    rows.push(Row {
        workload: "no-op check, packages".into(),
        n: count,
        runs,
        wall: median(walls),
        floor: Some(median(floors)),
        rss,
        note: format!(
            "floor: a process reading and parsing a {} KB dpkg status file (issue 13: within 2×)",
            status.len() / 1024
        ),
    });
    if let Some(r) = rows.last() {
        print_row(r);
    }
    Ok(())
}

fn main() -> Res<()> {
    let o = parse_args()?;
    if let Some(list) = &o.floor_child {
        return floor_child(list);
    }
    if let Some(status) = &o.dpkg_floor_child {
        let text = std::fs::read_to_string(status)?;
        let parsed = reconcile::host::parse::dpkg::parse_status(&text)?;
        std::hint::black_box(parsed.entries.len());
        return Ok(());
    }
    if !nix::unistd::Uid::effective().is_root() {
        // The workloads chown files to a service user, as real manifests do.
        if std::env::var("CI").as_deref() == Ok("true") {
            return Err("the benchmark workloads need root (they chown files)".into());
        }
        println!("skipping: the benchmark workloads need root (they chown files)");
        return Ok(());
    }
    if let Some(n) = o.generate {
        // For profiling by hand: a populated tree that outlives this process.
        let w = generate(n, &NO_EXTRA)?;
        populate(&w)?;
        let kept = w.tmp.keep();
        println!(
            "{} check --root {} {}\n(remove {} when done)",
            reconcile_bin().display(),
            kept.join("root").display(),
            kept.join("manifests").display(),
            kept.display()
        );
        return Ok(());
    }
    let sizes: Vec<usize> = if o.quick {
        vec![200]
    } else {
        [1_000, 10_000, 100_000]
            .into_iter()
            .filter(|&n| n <= o.max_n)
            .collect()
    };
    println!(
        "reconcile benchmark: binary {}, {} CPUs{}\n",
        reconcile_bin().display(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        if o.quick { ", quick mode" } else { "" }
    );
    println!(
        "floor: a minimal program (its own process) that lstats and SHA-256-hashes the same files; \
         the in-process loop and `find -exec sha256sum` are in the notes, with reconcile's ratio to each.\n"
    );
    header();
    let mut rows = Vec::new();
    for &n in &sizes {
        if wants(&o, "noop") || wants(&o, "drift") {
            noop_and_drift(&o, n, &mut rows)?;
        }
    }
    for &n in &sizes {
        if wants(&o, "converge") && n <= o.converge_max_n {
            converge(&o, n, &mut rows)?;
        }
    }
    if wants(&o, "mixed") {
        mixed(&o, &mut rows)?;
    }
    if wants(&o, "validate") {
        for &n in &sizes {
            validate(&o, n, &mut rows)?;
        }
    }
    if wants(&o, "packages") {
        packages(&o, &mut rows)?;
    }
    // Scaling summary: per-resource no-op time at the largest N against the smallest.
    let noop: Vec<&Row> = rows
        .iter()
        .filter(|r| r.workload == "no-op check")
        .collect();
    if let (Some(small), Some(big)) = (noop.first(), noop.last()) {
        if big.n > small.n {
            let per = |r: &Row| r.wall.as_secs_f64() / r.n as f64;
            println!(
                "\nscaling: no-op per-resource time at {} is {:.2}× that at {}",
                big.n,
                per(big) / per(small),
                small.n
            );
        }
    }
    Ok(())
}
