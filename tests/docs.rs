//! Every YAML example in README.md, docs/*.md and examples/*/README.md is a test: a
//! doc that shows a manifest that does not work fails CI.
//!
//! A fence's info string says how the block runs:
//! - ` ```yaml `: a whole manifest; validated and planned against a scratch root;
//! - ` ```yaml fragment `: resource entries (`- file: ...`), wrapped under
//!   `resources:` and run the same way;
//! - ` apply ` added to either: also applied, then planned again to prove it converged;
//! - ` in=DIR ` (a folder of the repository): the block is saved beside a copy of that
//!   folder's files, so its `template:`/`source:`/`include:` paths resolve;
//! - ` yaml no-run `: shown but not run, for text that is deliberately not a
//!   manifest.

mod support;

use std::path::{Path, PathBuf};

use support::sandbox::Sandbox;

const REPO: &str = env!("CARGO_MANIFEST_DIR");

struct Block {
    file: PathBuf,
    line: usize,
    words: Vec<String>,
    text: String,
}

impl Block {
    fn has(&self, word: &str) -> bool {
        self.words.iter().any(|w| w == word)
    }

    fn in_dir(&self) -> Option<&str> {
        self.words.iter().find_map(|w| w.strip_prefix("in="))
    }

    fn place(&self) -> String {
        format!(
            "{}:{}",
            self.file.strip_prefix(REPO).unwrap_or(&self.file).display(),
            self.line
        )
    }
}

fn doc_files() -> Vec<PathBuf> {
    let mut files = vec![
        Path::new(REPO).join("README.md"),
        Path::new(REPO).join("BENCHMARKS.md"),
    ];
    for dir in ["docs", "examples"] {
        let Ok(entries) = std::fs::read_dir(Path::new(REPO).join(dir)) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "md") {
                files.push(p);
            } else if p.join("README.md").is_file() {
                files.push(p.join("README.md"));
            }
        }
    }
    files.sort();
    files
}

fn yaml_blocks() -> Vec<Block> {
    let mut blocks = Vec::new();
    for file in doc_files() {
        let text =
            std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let mut current: Option<Block> = None;
        for (n, line) in text.lines().enumerate() {
            let trimmed = line.trim_start();
            match current.as_mut() {
                None => {
                    if let Some(info) = trimmed.strip_prefix("```yaml") {
                        current = Some(Block {
                            file: file.clone(),
                            line: n + 1,
                            words: info.split_whitespace().map(str::to_string).collect(),
                            text: String::new(),
                        });
                    }
                }
                Some(block) => {
                    if trimmed.starts_with("```") {
                        blocks.extend(current.take());
                    } else {
                        block.text.push_str(line);
                        block.text.push('\n');
                    }
                }
            }
        }
    }
    blocks
}

/// The block as a whole manifest.
fn manifest_text(block: &Block) -> String {
    if !block.has("fragment") {
        return block.text.clone();
    }
    let indent = block
        .text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.len() - l.trim_start().len())
        .min()
        .unwrap_or(0);
    let mut out = String::from("resources:\n");
    for l in block.text.lines() {
        out.push_str("  ");
        out.push_str(l.get(indent..).unwrap_or(""));
        out.push('\n');
    }
    out
}

fn copy_dir(from: &Path, to: &Path) {
    copy_below(from, to, true);
}

fn copy_below(from: &Path, to: &Path, top: bool) {
    std::fs::create_dir_all(to).unwrap_or_else(|e| panic!("mkdir {}: {e}", to.display()));
    let entries =
        std::fs::read_dir(from).unwrap_or_else(|e| panic!("read {}: {e}", from.display()));
    for e in entries.flatten() {
        let (src, dst) = (e.path(), to.join(e.file_name()));
        if src.is_dir() {
            copy_below(&src, &dst, false);
        } else if top && src.extension().is_some_and(|x| x == "yaml" || x == "yml") {
            // The folder's own manifests would be loaded with the block's: leave them.
            // (Below it they are not manifests: modules/NAME/module.yaml is needed.)
        } else {
            std::fs::copy(&src, &dst).unwrap_or_else(|e| panic!("copy {}: {e}", src.display()));
        }
    }
}

fn run_block(block: &Block) -> Result<(), String> {
    if block.has("no-run") {
        return Ok(());
    }
    let s = Sandbox::new();
    // Every real host has root.
    s.put("/etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n");
    s.put("/etc/group", b"root:x:0:\n");
    if let Some(dir) = block.in_dir() {
        copy_dir(&Path::new(REPO).join(dir), &s.manifests);
    }
    s.manifest("doc.yaml", &manifest_text(block));
    let validate = s.run("validate", &["doc.yaml"]);
    if validate.code() != 0 {
        return Err(format!("validate failed:\n{}", validate.all()));
    }
    let before = s.snapshot();
    let plan = s.run("plan", &["doc.yaml"]);
    if plan.code() != 0 {
        return Err(format!("plan failed:\n{}", plan.all()));
    }
    if s.snapshot() != before {
        return Err("plan changed the scratch root".into());
    }
    if block.has("apply") {
        let apply = s.run("apply", &["doc.yaml"]);
        if apply.code() != 0 {
            return Err(format!("apply failed:\n{}", apply.all()));
        }
        let again = s.run("plan", &["--detailed-exitcode", "doc.yaml"]);
        if again.code() != 0 {
            return Err(format!("plan after apply is not empty:\n{}", again.all()));
        }
    }
    Ok(())
}

#[test]
fn every_yaml_example_in_the_docs_validates_and_plans() {
    let blocks = yaml_blocks();
    assert!(blocks.len() >= 3, "found only {} yaml blocks", blocks.len());
    let failures: Vec<String> = blocks
        .iter()
        .filter_map(|b| run_block(b).err().map(|e| format!("{}: {e}", b.place())))
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} doc examples fail:\n\n{}",
        failures.len(),
        blocks.len(),
        failures.join("\n\n")
    );
}

#[test]
fn docs_never_point_at_files_outside_the_repository() {
    let mut bad = Vec::new();
    for file in doc_files() {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        for (n, line) in text.lines().enumerate() {
            if line.contains("../shared")
                || line.contains("SEED-NOTES")
                || line.contains("TESTHOSTS.md")
            {
                bad.push(format!("{}:{}: {line}", file.display(), n + 1));
            }
        }
    }
    assert!(
        bad.is_empty(),
        "docs name files outside the repository:\n{}",
        bad.join("\n")
    );
}
