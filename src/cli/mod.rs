//! Command-line interface: arguments are validated once into a config, then each
//! command runs and returns its exit code.

mod commands;
mod safety;
mod trail;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Exit codes shared by every command.
pub const EXIT_OK: u8 = 0;
pub const EXIT_ERROR: u8 = 1;
pub const EXIT_CHANGES: u8 = 2;

#[derive(Parser, Debug)]
#[command(name = "reconcile", version, about = "Declarative desired-state reconciler for Linux hosts", long_about = None)]
pub struct Cli {
    /// More output (-v info, -vv debug).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Only errors.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Log format for diagnostics on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Copy, Clone, Debug, ValueEnum, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Copy, Clone, Debug, ValueEnum, PartialEq, Eq)]
pub enum OutputFormat {
    Text,
    /// One JSON document.
    Json,
    /// `apply` only: one JSON line per finished resource as it finishes, then a
    /// summary line (for fleet runs and log shippers).
    Jsonl,
}

#[derive(Copy, Clone, Debug, ValueEnum, PartialEq, Eq)]
pub enum GraphFormat {
    Text,
    Dot,
}

#[derive(Args, Debug, Clone)]
pub struct Target {
    /// Target root: every path, account lookup, lock and log lives under it.
    #[arg(long, default_value = "/")]
    pub root: PathBuf,
    /// Environment to use (from the manifests' `environments:`).
    #[arg(long = "env")]
    pub env: Option<String>,
    /// Allow `--env` to differ from the environment recorded on the target by its last
    /// successful apply (the plan and the audit trail show the switch).
    #[arg(long, requires = "env")]
    pub switch_env: bool,
    /// Variable override, `key=value` (repeatable); applied after the environment.
    #[arg(long = "var", value_parser = parse_var)]
    pub vars: Vec<(String, String)>,
    /// Work only on resources with any of these tags (comma-separated or repeated),
    /// plus everything they depend on.
    #[arg(long, value_delimiter = ',')]
    pub tags: Vec<String>,
    /// Lint warnings (R0001..., docs/lints.md) are errors: exit 1, nothing changed.
    #[arg(long)]
    pub strict: bool,
    /// Resources observed/applied at once.
    #[arg(long, short = 'j')]
    pub jobs: Option<usize>,
    /// plan, apply, check: content over this many bytes is shown as "content differs
    /// (N bytes → M bytes)" instead of a diff, and hashed in chunks instead of read
    /// whole [default: 1048576].
    #[arg(long, value_name = "BYTES")]
    pub diff_limit: Option<u64>,
    /// A folder of modules (`NAME/module.yaml`), searched after `modules/` beside
    /// the manifest (repeatable).
    #[arg(long = "modules", value_name = "DIR")]
    pub modules: Vec<PathBuf>,
    /// The network namespace (`ip netns`) whose kernel a `firewall` targets; without
    /// it a firewall targets the running kernel, and only with `--root /`.
    #[arg(long, value_name = "NAME")]
    pub netns: Option<String>,
    /// Apply a firewall ruleset even if it drops new SSH connections from the current
    /// session's address or a `management` network.
    #[arg(long)]
    pub allow_lockout: bool,
    /// apply: roll a changed firewall back to the previous ruleset unless
    /// `reconcile confirm` runs within this time (`60s`, `5m`).
    #[arg(long, value_name = "DURATION", value_parser = crate::host::lock::parse_duration)]
    pub confirm_within: Option<std::time::Duration>,
    /// Manifest files or folders (default: manifests/).
    pub paths: Vec<PathBuf>,
}

fn parse_var(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("`{s}` is not key=value")),
    }
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Show what apply would change (read-only).
    Plan {
        #[command(flatten)]
        target: Target,
        #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
        format: OutputFormat,
        /// Save the plan to apply it later with `reconcile apply FILE`.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Exit 2 when there are changes, 0 when none, 1 on error.
        #[arg(long)]
        detailed_exitcode: bool,
    },
    /// Converge the target to the manifests, or apply a saved plan file.
    Apply {
        #[command(flatten)]
        target: Target,
        #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
        format: OutputFormat,
        /// Key file (outside the log) for an HMAC checkpoint at the end of the run.
        #[arg(long)]
        audit_key: Option<PathBuf>,
        /// When the audit log fails verification (edited, truncated, not a chain): move it
        /// aside unchanged and start a new segment whose first record names it and why.
        #[arg(long)]
        audit_recover: bool,
        /// Wait this long for another run's lock (`30s`, `5m`) instead of failing at once.
        #[arg(long, value_name = "DURATION", value_parser = crate::host::lock::parse_duration)]
        lock_timeout: Option<std::time::Duration>,
    },
    /// Detect drift (read-only): exit 0 in sync, 2 drift, 1 error.
    Check {
        #[command(flatten)]
        target: Target,
        #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
        format: OutputFormat,
    },
    /// Check the manifests (syntax, fields, ids, graph) without observing the target.
    Validate {
        #[command(flatten)]
        target: Target,
    },
    /// Verify or show the audit trail.
    Audit {
        /// Target root whose audit log is read.
        #[arg(long, default_value = "/", global = true)]
        root: PathBuf,
        /// The log to read, as a path under the root (what `settings.audit_log` names);
        /// each log has its own head file.
        #[arg(long, default_value = crate::audit::DEFAULT_LOG, global = true)]
        log: String,
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Keep the firewall changes of `apply --confirm-within` (else they are rolled back
    /// at the deadline).
    Confirm {
        /// Target root the apply ran against.
        #[arg(long, default_value = "/")]
        root: PathBuf,
        /// Internal: the watcher that rolls back the pending change with this token at
        /// its deadline unless it was confirmed.
        #[arg(long, hide = true, value_name = "TOKEN")]
        revert: Option<String>,
    },
    /// Print a resource equivalent to another tool's configuration: `import ufw FILE`
    /// reads `ufw status verbose` (or `numbered`) output or a script of `ufw`
    /// commands (`-` or no FILE: standard input) and prints a `firewall` manifest.
    Import {
        #[arg(value_enum)]
        from: ImportSource,
        file: Option<PathBuf>,
        /// The nftables table the resource owns.
        #[arg(long, default_value = "inet reconcile")]
        table: String,
    },
    /// Print a saved plan (`plan --out FILE`) as `plan` would, with its hash.
    Show {
        /// The saved plan file.
        plan: PathBuf,
        #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
        format: OutputFormat,
    },
    /// Print shell completions (bash, zsh, fish, elvish, powershell).
    Completions { shell: clap_complete::Shell },
    /// Print the man page (roff) on stdout: `reconcile man` for the tool,
    /// `reconcile man plan` for reconcile-plan(1) and so on.
    Man {
        /// A command whose page to print.
        command: Option<String>,
    },
    /// Modules: `reconcile module doc NAME` prints a module's parameters table.
    Module {
        #[command(subcommand)]
        command: ModuleCommand,
    },
    /// Print the dependency graph.
    Graph {
        #[command(flatten)]
        target: Target,
        #[arg(long, value_enum, default_value_t = GraphFormat::Text)]
        format: GraphFormat,
    },
}

#[derive(Copy, Clone, Debug, ValueEnum, PartialEq, Eq)]
pub enum ImportSource {
    /// ufw's rules.
    Ufw,
}

#[derive(Subcommand, Debug)]
pub enum ModuleCommand {
    /// Print a module's parameters as a Markdown table, generated from its module.yaml
    /// (looked for in ./modules, manifests/modules, then each --modules DIR).
    Doc {
        /// The module's name (its folder).
        name: String,
        /// A folder of modules to search too (repeatable).
        #[arg(long = "modules", value_name = "DIR")]
        modules: Vec<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
pub enum AuditCommand {
    /// Check the hash chain (and keyed checkpoints); names the first broken seq.
    Verify {
        /// HMAC key file for checkpoints.
        #[arg(long)]
        key: Option<PathBuf>,
        /// Log files, oldest first (default: the root's log and its rotations).
        files: Vec<PathBuf>,
    },
    /// Human-readable records.
    Show {
        /// Only records at or after this time (RFC 3339, or YYYY-MM-DD in UTC).
        #[arg(long)]
        since: Option<String>,
        /// Only records about resources whose id contains this text.
        #[arg(long)]
        resource: Option<String>,
        files: Vec<PathBuf>,
    },
}

/// Exit code of a command-line mistake. clap's own is 2, which `check` and
/// `plan --detailed-exitcode` use for "drift": a monitoring timer must never read a
/// typo in its flags as drift.
pub const USAGE_ERROR: u8 = 1;

/// Stack for parsing the command line: clap's parser, in a debug build, overflows a
/// main thread sized by `ulimit -s 256`.
const PARSE_STACK_BYTES: usize = 16 * 1024 * 1024;

/// The command line, parsed (and help or a usage error printed) on a thread with a
/// stack of known size. Only the parse runs there: the command itself runs on the
/// calling (main) thread, whose malloc arena the observers reuse after loading.
fn parse_args() -> Result<Cli, ExitCode> {
    let parse = || match Cli::try_parse() {
        Ok(cli) => Ok(cli),
        Err(e) => {
            let _ = e.print();
            Err(match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
                    ExitCode::SUCCESS
                }
                _ => ExitCode::from(USAGE_ERROR),
            })
        }
    };
    std::thread::Builder::new()
        .stack_size(PARSE_STACK_BYTES)
        .spawn(parse)
        .map_err(|_| ExitCode::from(USAGE_ERROR))?
        .join()
        .unwrap_or(Err(ExitCode::from(USAGE_ERROR)))
}

pub fn run() -> ExitCode {
    let cli = match parse_args() {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    init_logging(&cli);
    if let Command::Plan { target, .. }
    | Command::Apply { target, .. }
    | Command::Check { target, .. } = &cli.command
    {
        if let Some(limit) = target.diff_limit {
            crate::plan::set_diff_limit(limit);
        }
    }
    ExitCode::from(commands::dispatch(cli))
}

fn init_logging(cli: &Cli) {
    let level = if cli.quiet {
        tracing::Level::ERROR
    } else {
        match cli.verbose {
            0 => tracing::Level::WARN,
            1 => tracing::Level::INFO,
            _ => tracing::Level::DEBUG,
        }
    };
    let builder = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_target(false);
    let _ = match cli.log_format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .without_time()
            .try_init(),
    };
}
