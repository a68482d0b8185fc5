//! Capture: loads the embedded eBPF probe, attaches its hooks, and turns ring buffer records
//! into trace events.

/// The probe object built by `build.rs` from `probe-ebpf` (aya-build), embedded in the binary.
pub static PROBE_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/probe"));
