//! Developer tasks: the lab VM, the demo, the CI entry.
fn main() {}
