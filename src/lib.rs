//! reconcile: a declarative desired-state reconciler for Linux hosts.
pub mod apply;
pub mod audit;
pub mod cli;
pub mod diag;
pub mod engine;
pub mod graph;
pub mod host;
pub mod id;
pub mod lint;
pub mod manifest;
pub mod plan;
pub mod render;
pub mod resource;
pub mod state;
