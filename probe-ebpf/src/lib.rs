//! Stub library so the main crate can depend on this package at build time (the aya template
//! pattern): the real programs are the `probe` binary, built for the bpf target by aya-build.
#![no_std]
