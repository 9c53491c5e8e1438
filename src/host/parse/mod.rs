//! Pure parsers of real host files and tool output, tested against recorded fixtures.

pub mod auditctl;
pub mod passwd;
pub mod shadow;
pub mod systemctl;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file} line {line}: {message}")]
pub struct ParseError {
    pub file: &'static str,
    pub line: usize,
    pub message: String,
}
