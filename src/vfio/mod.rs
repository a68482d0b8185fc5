//! The controller: opens VFIO devices, sets up DMA and interrupts, drives the migration FSM,
//! saves and restores device state, and gathers DMA evidence.
