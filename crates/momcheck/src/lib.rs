//! momcheck's parts that the end-to-end tests share: the fault proxy of a peer link
//! (`proxy`). The checker itself is the binary (`main.rs`).

pub mod proxy;
