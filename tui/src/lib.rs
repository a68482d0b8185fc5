//! The migscope timeline: a pure view over a stream of events and verdict updates.
