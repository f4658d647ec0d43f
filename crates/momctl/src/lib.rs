//! momctl's client library: connect to momd, publish with pipelining, watch patterns, and
//! run admin requests. momctl, momtui and the benchmarks use it; a Rust program can too.
//!
//! ```no_run
//! # async fn demo() -> Result<(), momctl::client::ClientError> {
//! use momctl::client::{Client, ConnectOptions};
//! let client = Client::connect(&ConnectOptions::new("127.0.0.1:7878", "example")).await?;
//! let msg = momctl::client::message(b"hello".to_vec(), Default::default(), None);
//! let ack = client.publish("orders.eu", vec![msg]).await?;
//! println!("stored at seq {:?}", ack.seqs);
//! # Ok(()) }
//! ```

pub mod client;
pub mod human;
pub mod json;
pub mod profile;
