//! Routing: from a key to a worker.
//!
//! A key is hashed once with [`key_hash`] (ahash with fixed seeds, a pinned crate version).
//! Rendezvous hashing ([`pick`], [`rank`]) then chooses among the live workers by the highest
//! [`score`] of (key hash, worker id): when a worker goes down only its own keys move, and they
//! come back when it returns. [`fingerprint()`] summarises the whole mapping in one number for the
//! start-up log, since the hash depends on the ahash version and on the CPU features the binary
//! was compiled for ([`hash_path`]).
//!
//! ```
//! use std::net::IpAddr;
//! use stickyd::keys::Key;
//! use stickyd::route::{key_hash, pick, rank};
//!
//! let hash = key_hash(Key::Addr("192.0.2.1".parse::<IpAddr>().unwrap()));
//! let worker = pick(hash, 0..4).unwrap();
//! assert_eq!(rank(hash, 0..4)[0], worker);
//! // With that worker down, the next by rank takes the key.
//! let next = rank(hash, 0..4)[1];
//! assert_eq!(pick(hash, (0..4).filter(|&w| w != worker)), Some(next));
//! ```

mod fingerprint;
mod hash;
mod rendezvous;

pub use fingerprint::{Fingerprint, fingerprint, hash_path};
pub use hash::key_hash;
pub use rendezvous::{pick, rank, score};
