//! `pullgate-install`: the node installer (work in progress).
fn main() {}
