//! The event ABI shared by the eBPF probe and userspace, and the no_std core of the VFIO
//! migration model (states, flags, the kernel's next-step table).
#![no_std]

pub mod abi;
pub mod mig;

pub use mig::{MigFlags, MigState, PrecopyInfo};
