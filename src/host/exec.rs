//! Running external tools: no shell, a clean environment, a timeout, stderr captured.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::HostError;

pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);

/// What a finished command left behind.
#[derive(Debug, Clone)]
pub struct Output {
    pub status: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn success(&self) -> bool {
        self.status == Some(0)
    }

    /// The most useful text for an error message: stderr, else stdout, trimmed.
    pub fn reason(&self) -> String {
        let text = if self.stderr.trim().is_empty() {
            self.stdout.trim()
        } else {
            self.stderr.trim()
        };
        let code = match self.status {
            Some(c) => format!("exit code {c}"),
            None => "killed by a signal".to_string(),
        };
        if text.is_empty() {
            code
        } else {
            format!("{code}: {text}")
        }
    }
}

/// A command line to run, built once and shown in errors exactly as run.
#[derive(Debug, Clone)]
pub struct Cmd {
    pub program: String,
    pub args: Vec<String>,
    pub timeout: Duration,
    pub stdin: Option<Vec<u8>>,
    /// Variables set on top of the cleared environment (apt's
    /// `DEBIAN_FRONTEND=noninteractive`); never secrets, they are not redacted.
    pub env: Vec<(String, String)>,
}

impl Cmd {
    pub fn new(program: impl Into<String>) -> Cmd {
        Cmd {
            program: program.into(),
            args: Vec::new(),
            timeout: DEFAULT_TIMEOUT,
            stdin: None,
            env: Vec::new(),
        }
    }

    pub fn arg(mut self, a: impl Into<String>) -> Cmd {
        self.args.push(a.into());
        self
    }

    pub fn args<I, S>(mut self, items: I) -> Cmd
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(items.into_iter().map(Into::into));
        self
    }

    /// Sets one variable in the command's (otherwise cleared) environment.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Cmd {
        self.env.push((key.into(), value.into()));
        self
    }

    pub fn timeout(mut self, t: Duration) -> Cmd {
        self.timeout = t;
        self
    }

    pub fn display(&self) -> String {
        let mut s = self.program.clone();
        for a in &self.args {
            s.push(' ');
            if a.is_empty() || a.contains(char::is_whitespace) {
                s.push_str(&format!("'{a}'"));
            } else {
                s.push_str(a);
            }
        }
        s
    }

    /// The subcommand of a tool that has them (`systemctl enable`), for logs; empty
    /// for other tools, whose first plain word is an argument (`useradd ... NAME`).
    /// Options come first (`systemctl --no-ask-password --root DIR enable`), so the
    /// verb is the first plain lowercase word.
    pub fn verb(&self) -> &str {
        const WITH_SUBCOMMANDS: &[&str] = &[
            "systemctl",
            "systemd-analyze",
            "apt-get",
            "apt-cache",
            "apt-mark",
            "nft",
            "ip",
        ];
        let program = self.program.rsplit('/').next().unwrap_or(&self.program);
        if !WITH_SUBCOMMANDS.contains(&program) {
            return "";
        }
        self.args
            .iter()
            .find(|a| !a.starts_with('-') && a.chars().all(|c| c.is_ascii_lowercase() || c == '-'))
            .map(String::as_str)
            .unwrap_or("")
    }

    /// Runs the command; a non-zero exit is not an error here (callers decide), a
    /// command that cannot start or overruns its timeout is.
    pub fn run(&self) -> Result<Output, HostError> {
        // The program and its verb (`systemctl enable`), never the arguments: they
        // can hold a password hash.
        tracing::debug!(program = %self.program, verb = %self.verb(), "running");
        let mut command = Command::new(&self.program);
        command
            .args(&self.args)
            .env_clear()
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .env("LC_ALL", "C")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(if self.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().map_err(|e| HostError::Command {
            command: self.display(),
            reason: format!("cannot start: {e}"),
        })?;
        if let (Some(data), Some(mut pipe)) = (self.stdin.clone(), child.stdin.take()) {
            std::thread::spawn(move || {
                use std::io::Write;
                let _ = pipe.write_all(&data);
            });
        }
        let stdout = child.stdout.take().map(spawn_reader);
        let stderr = child.stderr.take().map(spawn_reader);
        let started = Instant::now();
        let mut pause = Duration::from_millis(1);
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if started.elapsed() > self.timeout => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(HostError::Command {
                        command: self.display(),
                        reason: format!("timed out after {:?}", self.timeout),
                    });
                }
                Ok(None) => {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(50));
                }
                Err(e) => {
                    return Err(HostError::Command {
                        command: self.display(),
                        reason: e.to_string(),
                    })
                }
            }
        };
        let collect = |h: Option<std::thread::JoinHandle<String>>| {
            h.and_then(|h| h.join().ok()).unwrap_or_default()
        };
        Ok(Output {
            status: status.code(),
            stdout: collect(stdout),
            stderr: collect(stderr),
        })
    }

    /// Starts the command and does not wait for it: no stdin, output discarded, the
    /// same cleared environment. For a process that must outlive this one (and the
    /// SSH session that started it), run it under `setsid`. Returns its pid.
    pub fn spawn_detached(&self) -> Result<u32, HostError> {
        tracing::debug!(program = %self.program, verb = %self.verb(), "starting detached");
        let child = Command::new(&self.program)
            .args(&self.args)
            .env_clear()
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .env("LC_ALL", "C")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| HostError::Command {
                command: self.display(),
                reason: format!("cannot start: {e}"),
            })?;
        Ok(child.id())
    }

    /// Runs and turns a non-zero exit into an error carrying stderr.
    pub fn run_ok(&self) -> Result<Output, HostError> {
        let out = self.run()?;
        if out.success() {
            Ok(out)
        } else {
            Err(HostError::Command {
                command: self.display(),
                reason: out.reason(),
            })
        }
    }
}

fn spawn_reader<R: Read + Send + 'static>(mut r: R) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    })
}

/// True when `name` is found as an executable on the standard PATH.
pub fn tool_exists(name: &str) -> bool {
    [
        "/usr/local/sbin",
        "/usr/local/bin",
        "/usr/sbin",
        "/usr/bin",
        "/sbin",
        "/bin",
    ]
    .iter()
    .any(|d| Path::new(d).join(name).is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_logged_verb_skips_options_and_is_empty_for_tools_without_subcommands() {
        let cases: [(&str, &[&str], &str); 5] = [
            (
                "systemctl",
                &["--no-ask-password", "--root", "/tmp/r", "enable", "x.timer"],
                "enable",
            ),
            (
                "systemctl",
                &["--no-ask-password", "daemon-reload"],
                "daemon-reload",
            ),
            (
                "/usr/bin/systemd-analyze",
                &["verify", "--man=no"],
                "verify",
            ),
            (
                "useradd",
                &["--prefix", "/tmp/r", "--gid", "staff", "bob"],
                "",
            ),
            ("systemctl", &["--root", "/tmp/r"], ""),
        ];
        for (program, args, verb) in cases {
            let cmd = Cmd::new(program).args(args.iter().copied());
            assert_eq!(cmd.verb(), verb, "{program} {args:?}");
        }
    }
}
