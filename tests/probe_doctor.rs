//! Privileged host test: `migscope doctor --json` really loads and attaches the probe, lists
//! every hook as attached or unavailable with a reason, and names the blind rules. Skips,
//! saying so, when not root.

use std::process::Command;

#[test]
fn doctor_reports_every_hook_with_a_reason() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIP: doctor_reports_every_hook_with_a_reason needs root to load eBPF");
        return;
    }
    let out = Command::new(env!("CARGO_BIN_EXE_migscope"))
        .args(["doctor", "--json"])
        .output()
        .expect("run doctor");
    assert!(out.status.success(), "doctor failed: {out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("doctor JSON");
    assert_eq!(v["probe"]["loaded"], true, "{v:#}");
    assert!(v["kernel"].as_str().is_some_and(|k| !k.is_empty()));
    let hooks = v["hooks"].as_array().expect("hooks");
    for name in [
        "syscalls:sys_enter_ioctl",
        "syscalls:sys_exit_ioctl",
        "irq:irq_handler_entry",
        "iommu:map",
        "iommu:unmap",
        "iommu:io_page_fault",
    ] {
        let h = hooks
            .iter()
            .find(|h| h["name"] == name)
            .unwrap_or_else(|| panic!("{name} missing: {v:#}"));
        assert_eq!(h["attached"], true, "{h:#}");
    }
    for h in hooks {
        let ok = h["attached"] == true && h["how"].as_str().is_some_and(|s| !s.is_empty())
            || h["attached"] == false && h["why"].as_str().is_some_and(|s| !s.is_empty());
        assert!(ok, "hook without status or reason: {h:#}");
    }
    for name in ["vfio_mig_get_next_state", "vfio_dma_rw", "vfio_pin_pages"] {
        assert!(
            hooks.iter().any(|h| h["name"] == name),
            "{name} not reported: {v:#}"
        );
    }
    for s in ["transitions", "irq", "iommu_map", "iommu_fault", "mdev_dma"] {
        assert!(v["sources"][s].is_string(), "source {s}: {v:#}");
    }
    assert!(
        v["blind"]
            .as_array()
            .is_some_and(|b| b.iter().any(|r| r["rule"] == "dma-after-quiesce")),
        "{v:#}"
    );
}
