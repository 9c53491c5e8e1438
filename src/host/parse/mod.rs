//! Pure parsers of real host files and tool output, tested against recorded fixtures.

pub mod apt;
pub mod apt_mirrors;
pub mod auditctl;
pub mod dpkg;
pub mod nft;
pub mod openpgp;
pub mod passwd;
pub mod shadow;
pub mod systemctl;
pub mod ufw;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file} line {line}: {message}")]
pub struct ParseError {
    pub file: &'static str,
    pub line: usize,
    pub message: String,
}
