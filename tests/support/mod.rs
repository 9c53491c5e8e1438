//! Helpers shared by integration tests. Each test binary compiles this module and
//! uses only part of it, hence the dead_code allowances.

#[allow(dead_code)]
pub mod apt_repo;
#[allow(dead_code)]
pub mod sandbox;
#[allow(dead_code)]
pub mod testhost;
