//! SOP: an embedded transactional B-tree storage engine.
#![allow(dead_code)]

pub mod btree;
pub mod codec;
pub mod error;
// pub mod log;
pub mod options;
pub mod registry;
pub mod state;
// pub mod storage;
pub mod types;

pub use error::{Error, Result};
