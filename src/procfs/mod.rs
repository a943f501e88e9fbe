//! Reads per-process resource usage of a unit's cgroup from procfs and cgroupfs.
//!
//! (Being written: see the module owner's task.)
