//! The verifier: the rules of DESIGN.md over a stream of events, O(devices) memory.
