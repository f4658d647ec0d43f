//! The mom workspace root. It holds no code of its own: the end-to-end tests in `tests/`
//! start the real `momd` and drive it with the real `momctl`. Start reading at
//! `crates/proto` (the wire contract), then `crates/momd`.
